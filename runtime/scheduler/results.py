"""What a step's results do to their requests: tokens appended, finishes decided, pages shared.

For each scheduled slice the runner returns a `StepResult`:

    prefill chunk, not the last   KV length grows; its whole pages enter the tree (commit)
    slice that samples            the token is appended, then checked against EOS, stop ids,
                                  max_new_tokens and the context; a grammar advances and may
                                  force its next tokens (jump-forward)
    speculative slice             the drafts the model agrees with are kept, then its own token

The KV length grew when the slice was launched. Under overlap scheduling a result arrives one
step late, so its request may have moved on meanwhile:

    ended (finished, aborted)     the result is dropped: a wasted decode, pages already back
    retracted since the launch    the sample still counts (it came from valid KV); the slice's
                                  pages are gone, so nothing is committed, and a chunk's prompt
                                  logprobs are dropped (the re-prefill computes them again)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..wire.messages import AbortCode, FinishReason
from ..wire.stats import SchedulerCounters
from .batch_builder import ScheduledSlice
from .config import SchedulerConfig
from .kv_manager import RequestKVManager
from .request import Req
from .step import StepResult


class ResultApplier:
    def __init__(
        self,
        kv: RequestKVManager,
        config: SchedulerConfig,
        eos_token_ids: frozenset[int],
        counters: SchedulerCounters,
        jump_forward: bool,
    ) -> None:
        self.kv = kv
        self.config = config
        self.eos_token_ids = eos_token_ids
        self.counters = counters
        self.jump_forward = jump_forward  # grammar-forced tokens in one chunk, not a step each

    def apply(self, scheduled: ScheduledSlice, result: StepResult) -> bool:
        """The request's new state after its slice ran: prompt logprobs, the sampled token (or
        the kept drafts), its finish; computed whole pages move into the tree. False when the
        result is dropped because the request ended while the step was in flight."""
        req = scheduled.req
        if req.future_launch == scheduled.launch:
            req.future = None  # the sample arrives (the request may hold a newer one)
        if req.finish is not None:
            self.counters.dropped_results += 1
            return False
        drafts = scheduled.step_request.draft_token_ids
        if drafts:
            if result.verified_ids is None:
                raise RuntimeError("the runner returned no verified ids for a drafted slice")
            self._apply_verified(req, drafts, result.verified_ids)
            return True
        kv_valid = scheduled.epoch == req.retractions
        if result.input_logprobs and (kv_valid or result.next_token_id is not None):
            req.input_logprobs.extend(result.input_logprobs)
            req.input_top_logprobs.extend(
                result.input_top_logprobs or [None] * len(result.input_logprobs)
            )
        if result.next_token_id is None:
            if kv_valid:  # an unfinished chunk: share it with requests arriving meanwhile
                self.kv.commit(req)
            return True
        if req.sampling.max_new_tokens == 0:
            req.finish = FinishReason("length")  # prefill only (scoring); the sample is dropped
            return True
        token = result.next_token_id
        req.output_ids.append(token)
        req.pending_ids.append(token)
        if req.return_logprob and result.logprob is not None:
            req.pending_logprobs.append(result.logprob)
            req.pending_top_logprobs.append(result.top_logprobs or [])
        req.finish = self._check_finish(req, token)
        if req.grammar is not None and req.finish is None:
            req.finish = self._advance_grammar(req, token)
        if scheduled.is_prefill and kv_valid:
            self.kv.commit(req)
        return True

    def _apply_verified(self, req: Req, drafts: Sequence[int], verified: list[int]) -> None:
        """Keeps the drafts the model agrees with, then the model's own next token.

        The step fed [last, d1..dk]; verified[i] is the model's greedy token after row i. Drafts
        d1..dj with d(i+1) == verified[i] are exactly what decoding one token at a time would
        have produced, and verified[j] follows them. The KV of the last token and the j kept
        drafts is valid; rows past them are garbage that later steps overwrite. (Drafted steps
        are never left in flight, so the launch's KV growth of 1 + k is corrected here.)
        """
        kept = 0
        while kept < len(drafts) and drafts[kept] == verified[kept]:
            kept += 1
        self.counters.spec_draft_tokens += len(drafts)
        self.counters.spec_accepted_tokens += kept
        req.kv_len -= len(drafts) - kept
        tokens = [*drafts[:kept], verified[kept]]
        for position, token in enumerate(tokens):
            req.output_ids.append(token)
            req.pending_ids.append(token)
            req.finish = self._check_finish(req, token)
            if req.finish is None and req.grammar is not None:
                if position == len(tokens) - 1:
                    req.finish = self._advance_grammar(req, token)  # may jump forward
                elif not req.grammar.accept(token):
                    message = f"the grammar rejected {token}"
                    req.finish = FinishReason.abort(AbortCode.GRAMMAR, message)
                elif req.grammar.is_finished:
                    req.finish = FinishReason("stop")
            if req.finish is not None:
                break
        # A stop among the kept drafts ends there; jump-forward tokens have no KV yet.
        req.kv_len = min(req.kv_len, req.fill_len)

    def _advance_grammar(self, req: Req, token: int) -> FinishReason | None:
        """Moves the request's grammar past `token`, then appends the tokens the grammar forces
        next (jump-forward): they are fed to the model as one chunk by the next step, instead of
        one decode step each. Skipped for logprob requests, which need every token's logprob."""
        grammar = req.grammar
        assert grammar is not None, "only constrained requests advance a grammar"
        if not grammar.accept(token):
            return FinishReason.abort(AbortCode.GRAMMAR, f"the grammar rejected token {token}")
        if grammar.is_finished:
            return FinishReason("stop")
        if not self.jump_forward or req.return_logprob:
            return None
        room = min(req.remaining_new_tokens(), self.config.context_len - req.fill_len)
        forced = grammar.forced_tokens()[: max(room, 0)]
        if not forced:
            return None
        if not grammar.accept_forced(forced):  # the matcher is now in an error state
            message = "the grammar rejected its own forced tokens"
            return FinishReason.abort(AbortCode.GRAMMAR, message)
        req.output_ids.extend(forced)
        req.pending_ids.extend(forced)
        self.counters.jump_forward_tokens += len(forced)
        if grammar.is_finished:
            return FinishReason("stop")
        if len(req.output_ids) >= req.sampling.max_new_tokens:
            return FinishReason("length")
        if req.fill_len >= self.config.context_len:
            return FinishReason("length")
        return None

    def _check_finish(self, req: Req, token: int) -> FinishReason | None:
        params = req.sampling
        if not params.ignore_eos and token in self.eos_token_ids:
            return FinishReason("stop", matched=token)
        if params.stop_token_ids and token in params.stop_token_ids:
            return FinishReason("stop", matched=token)
        if len(req.output_ids) >= params.max_new_tokens:
            return FinishReason("length")
        if req.fill_len >= self.config.context_len:
            return FinishReason("length")
        return None
