"""The scheduling loop's core, free of I/O: requests in, one step at a time, token outputs out.

Each `step()`:
  1. drops aborted requests (their pages and locks go back);
  2. gives every decoding request one token, retracting the cheapest ones if the pool is short;
  3. continues running prefills in chunks under the step's token budget;
  4. admits waiting requests in policy order (match + lock their cached prefix) while the budget,
     `max_running_requests` and a reservation for their expected new tokens allow;
  5. runs the model runner once over the mixed batch, appends sampled tokens, checks stops, and moves
     computed pages into the radix tree so later requests share them.
The runner is anything with `step(list[StepRequest]) -> list[StepResult]`, so tests can stand one in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ...radix_cache import PrefixCache
from ..wire.messages import AbortCode, DetokenizeSpec, FinishReason, GenerateReq, TokenOut
from .batch_builder import BatchBuilder, ScheduledSlice
from .kv_manager import RequestKVManager
from .request import Req
from .stats import SchedulerCounters, StepStats
from .step import StepRunner

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SchedulerConfig:
    page_size: int
    context_len: int
    chunked_prefill_size: int = 2048
    max_prefill_tokens: int = 8192
    max_running_requests: int = 256
    schedule_policy: str = "lpm"
    log_interval: int = 0  # steps between log lines; 0 = never
    num_draft_tokens: int = 0  # n-gram speculative decoding: drafts per step; 0 = off
    ngram_max: int = 3  # longest suffix n-gram looked up for drafts


class Scheduler:
    def __init__(
        self,
        runner: StepRunner,
        cache: PrefixCache,
        config: SchedulerConfig,
        eos_token_ids: Collection[int],
        sharing: bool = True,
        grammar_backend: Any = None,
        jump_forward: bool = True,
    ) -> None:
        self.runner = runner
        self.cache = cache
        self.config = config
        self.eos_token_ids = frozenset(eos_token_ids)
        self.grammar_backend = grammar_backend  # None: structured output is refused
        self.jump_forward = jump_forward
        self.kv = RequestKVManager(cache, config.page_size, sharing)
        self.builder = BatchBuilder(self.kv, config)
        self.waiting: list[Req] = []
        self.running: list[Req] = []
        self.requests: dict[str, Req] = {}
        self.counters = SchedulerCounters()
        self.last_step = StepStats()

    # --- requests in ---------------------------------------------------------------------------

    def add_request(self, msg: GenerateReq) -> None:
        if msg.rid in self.requests:
            raise ValueError(f"request id {msg.rid!r} is already in use")
        if not msg.input_ids:
            raise ValueError("the prompt is empty")
        needed = -(-min(len(msg.input_ids) + 1, self.config.context_len) // self.config.page_size)
        if needed > self.cache.num_pages:
            raise ValueError(
                f"the prompt needs {needed} KV pages but the pool has {self.cache.num_pages}"
            )
        req = Req.from_wire(msg)
        grammar = msg.sampling.grammar
        if grammar is not None:
            if self.grammar_backend is None:
                raise ValueError("structured output (regex, json_schema, ebnf) is disabled here")
            req.grammar = self.grammar_backend.matcher(*grammar)  # GrammarError is a ValueError
        self.requests[req.rid] = req
        self.waiting.append(req)
        self.counters.prompt_tokens += len(req.prompt_ids)

    def abort(self, rid: str, message: str = "aborted", code: AbortCode = AbortCode.CLIENT) -> None:
        """Marks a request aborted; its resources go back at the start of the next step, whose
        outputs carry its final abort (counted in `requests_aborted`)."""
        req = self.requests.get(rid)
        if req is not None and req.finish is None:
            req.aborted = True
            req.finish = FinishReason.abort(code, message)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # --- one step ------------------------------------------------------------------------------

    def step(self) -> list[TokenOut]:
        started = time.perf_counter()
        outputs = self._drop_aborted()
        plan = self.builder.build(self.waiting, self.running)
        self.counters.retractions += len(plan.retracted)
        stats = StepStats(
            batch_size=len(plan.slices),
            prefill_tokens=sum(s.extend_len for s in plan.slices if s.is_prefill),
            decode_tokens=sum(1 for s in plan.slices if not s.is_prefill),
            cache_hit_tokens=plan.cache_hit_tokens,
        )
        self.counters.cache_hit_tokens += plan.cache_hit_tokens
        self._attach_vocab_masks(plan.slices)
        self._ban_early_stops(plan.slices)
        if plan.slices:
            forward_start = time.perf_counter()
            results = self.runner.step([s.step_request for s in plan.slices])
            stats.forward_seconds = time.perf_counter() - forward_start
            for scheduled, result in zip(plan.slices, results, strict=True):
                self._apply(scheduled, result)
            outputs.extend(self._collect_outputs([s.req for s in plan.slices]))
        # Everything but the runner's forward pass is the scheduler's own CPU cost.
        stats.schedule_seconds = time.perf_counter() - started - stats.forward_seconds
        stats.queue_depth, stats.running = len(self.waiting), len(self.running)
        stats.kv_usage = 1.0 - self.cache.num_free_pages / max(self.cache.num_pages, 1)
        self.counters.add(stats)
        self.last_step = stats
        self._maybe_log(stats)
        return outputs

    def _ban_early_stops(self, slices: list[ScheduledSlice]) -> None:
        """Requests short of min_new_tokens may not sample a token that would end them."""
        for scheduled in slices:
            req, request = scheduled.req, scheduled.step_request
            params = req.sampling
            if not request.sample or params.min_new_tokens <= len(req.output_ids):
                continue
            stops = set(params.stop_token_ids or ())
            if not params.ignore_eos:
                stops |= self.eos_token_ids
            request.banned_token_ids = sorted(stops)

    def _attach_vocab_masks(self, slices: list[ScheduledSlice]) -> None:
        """Gives each constrained request that samples this step its allowed-token bitmask."""
        constrained = []
        for scheduled in slices:
            request, grammar = scheduled.step_request, scheduled.req.grammar
            if grammar is None or not request.sample:
                continue
            if request.draft_token_ids:  # a mask per verified row
                request.vocab_mask = grammar.draft_bitmasks(list(request.draft_token_ids))
            else:
                constrained.append(scheduled)
        if not constrained:
            return
        masks = self.grammar_backend.allowed_tokens_bitmasks([s.req.grammar for s in constrained])
        for scheduled, mask in zip(constrained, masks, strict=True):
            scheduled.step_request.vocab_mask = mask

    def _apply(self, scheduled: ScheduledSlice, result: Any) -> None:
        req = scheduled.req
        drafts = scheduled.step_request.draft_token_ids
        if drafts:
            self._apply_verified(req, drafts, result.verified_ids)
            return
        req.kv_len += scheduled.extend_len
        if result.input_logprobs:
            req.input_logprobs.extend(result.input_logprobs)
            req.input_top_logprobs.extend(
                result.input_top_logprobs or [None] * len(result.input_logprobs)
            )
        if result.next_token_id is None:
            self.kv.commit(req)  # an unfinished chunk: share it with requests arriving meanwhile
            return
        if req.sampling.max_new_tokens == 0:
            req.finish = FinishReason("length")  # prefill only (scoring); the sample is dropped
            return
        token = result.next_token_id
        req.output_ids.append(token)
        req.pending_ids.append(token)
        if req.return_logprob and result.logprob is not None:
            req.pending_logprobs.append(result.logprob)
            req.pending_top_logprobs.append(result.top_logprobs or [])
        req.finish = self._check_finish(req, token)
        if req.grammar is not None and req.finish is None:
            req.finish = self._advance_grammar(req, token)
        if scheduled.is_prefill:
            self.kv.commit(req)

    def _apply_verified(self, req: Req, drafts: list[int], verified: list[int]) -> None:
        """Keeps the drafts the model agrees with, then the model's own next token.

        The step fed [last, d1..dk]; verified[i] is the model's greedy token after row i. Drafts
        d1..dj with d(i+1) == verified[i] are exactly what decoding one token at a time would
        have produced, and verified[j] follows them. The KV of the last token and the j kept
        drafts is valid; rows past them are garbage that later steps overwrite.
        """
        kept = 0
        while kept < len(drafts) and drafts[kept] == verified[kept]:
            kept += 1
        self.counters.spec_draft_tokens += len(drafts)
        self.counters.spec_accepted_tokens += kept
        req.kv_len += 1 + kept
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

    def finish_externally(self, rid: str, finish: FinishReason) -> None:
        """Ends a request for a reason found outside: a stop string the detokenizer matched.

        Called between steps (the server's `FinishReq`, the offline Engine directly). Its pages
        and locks go back now and it counts as finished; no output follows, as whoever found
        the reason has already sent the final one. A no-op if the request has ended already.
        """
        req = self.requests.get(rid)
        if req is not None and req.finish is None:
            req.finish = finish
            self._retire(req)
            self.counters.requests_finished += 1

    def abort_after_failure(self, live: list[Req], message: str) -> list[TokenOut]:
        """Ends `live` (the requests before a step that raised) with an `internal` abort.

        The failed step may have left any of them half-applied: a finish already set, or retired
        with its final output lost along with the step's return value. So every one of them is
        retired here (a no-op for those retired already) and gets a final output, so no caller
        waits forever and no page or lock stays held.
        """
        outputs = []
        for req in live:
            if req.rid in self.requests:  # not counted yet (finished or aborted) by the step
                self.counters.requests_aborted += 1
            req.aborted = True
            req.finish = FinishReason.abort(AbortCode.INTERNAL, message)
            self._retire(req)
            outputs.append(self._token_out(req))
        return outputs

    def _drop_aborted(self) -> list[TokenOut]:
        outputs = []
        for req in [r for r in self.waiting + self.running if r.aborted]:
            self._retire(req)
            outputs.append(self._token_out(req))
            self.counters.requests_aborted += 1
        return outputs

    def _retire(self, req: Req) -> None:
        self.kv.release(req)
        if req in self.running:
            self.running.remove(req)
        if req in self.waiting:
            self.waiting.remove(req)
        self.requests.pop(req.rid, None)

    def _collect_outputs(self, reqs: list[Req]) -> list[TokenOut]:
        outputs = []
        for req in reqs:
            if req.finish is not None:
                self._retire(req)
                self.counters.requests_finished += 1
            if req.pending_ids or req.finish is not None:
                outputs.append(self._token_out(req))
        return outputs

    def _token_out(self, req: Req) -> TokenOut:
        out = TokenOut(
            rid=req.rid,
            new_token_ids=req.pending_ids,
            prompt_tokens=len(req.prompt_ids),
            cached_tokens=req.cached_len,
            completion_tokens=len(req.output_ids),
            finish=req.finish,
            output_logprobs=req.pending_logprobs,
            output_top_logprobs=req.pending_top_logprobs,
        )
        if not req.spec_sent:
            out.spec = DetokenizeSpec(
                stop=req.sampling.stop_strings(),
                skip_special_tokens=req.sampling.skip_special_tokens,
                spaces_between_special_tokens=req.sampling.spaces_between_special_tokens,
            )
            req.spec_sent = True
        if req.return_logprob and req.logprob_start_len >= 0 and not req.input_logprobs_sent:
            lead: list[float | None] = [None] if req.logprob_start_len == 0 else []
            out.input_logprobs = lead + list(req.input_logprobs)
            out.input_top_logprobs = lead + list(req.input_top_logprobs)  # type: ignore[operator]
            req.input_logprobs_sent = True
        req.pending_ids, req.pending_logprobs, req.pending_top_logprobs = [], [], []
        return out

    def _maybe_log(self, stats: StepStats) -> None:
        interval = self.config.log_interval
        if interval and self.counters.steps % interval == 0:
            logger.info(
                "step %d: batch=%d prefill=%d decode=%d hit=%d queue=%d kv=%.1f%% sched=%.2fms",
                self.counters.steps,
                stats.batch_size,
                stats.prefill_tokens,
                stats.decode_tokens,
                stats.cache_hit_tokens,
                stats.queue_depth,
                100 * stats.kv_usage,
                1e3 * stats.schedule_seconds,
            )

    # --- maintenance ---------------------------------------------------------------------------

    def flush_cache(self) -> bool:
        """Evicts every cached prefix; refused while requests run (their paths are locked)."""
        if self.has_work:
            return False
        self.cache.flush()
        return True

    def stats(self) -> dict[str, object]:
        """Counters, the last step's figures and the cache's statistics, as plain values."""
        from dataclasses import asdict

        cache_stats = self.cache.stats()
        stats: dict[str, object] = {
            **self.counters.as_dict(),
            "last_step": asdict(self.last_step),
            "waiting": len(self.waiting),
            "running": len(self.running),
            "num_pages": self.cache.num_pages,
            "free_pages": self.cache.num_free_pages,
            "cache": asdict(cache_stats)
            if hasattr(cache_stats, "__dataclass_fields__")
            else dict(cache_stats),
        }
        if not self.has_work:
            # Only when idle: the check walks the whole tree, too slow to run under load on every
            # metrics scrape, and an idle runtime is where a leaked page or lock would show.
            stats["integrity"] = self.integrity_report()
        return stats

    def integrity_report(self) -> str:
        """'ok', or what `check_integrity` found wrong."""
        try:
            self.check_integrity()
        except AssertionError as error:  # the cache's check raises AssertionError with details
            return f"broken: {error}"
        return "ok"

    def check_integrity(self) -> None:
        self.cache.check_integrity(held_pages=self.kv.held_pages(self.running))
