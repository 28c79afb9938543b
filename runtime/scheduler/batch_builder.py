"""Chooses the next step's batch: decodes first, then prefill chunks, then new admissions.

Admission reserves KV for the tokens a request is expected to generate, as a fraction
(`new_token_ratio`) of its `max_new_tokens`. The ratio starts conservative, decays while steps run
without trouble, and jumps back up after a retraction, as SGLang's scheduler does. Retraction
sends the request whose redo costs least (fewest generated tokens) back to the waiting queue;
its computed pages go into the tree first, so re-admission matches most of them.

Under overlap scheduling the previous step is still in flight while this one is built: a request
whose sample is pending decodes its placeholder (`Req.future`), one that the pending sample is
sure to end gets no slice, and a retracted one waits for that sample before re-admission.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import SchedulerConfig
from .kv_manager import RequestKVManager, pages_for
from .ngram import propose_drafts
from .policy import order_waiting
from .request import Req
from .step import RequestSlice, StepRequest

INIT_NEW_TOKEN_RATIO = 0.7
MIN_NEW_TOKEN_RATIO = 0.1
NEW_TOKEN_RATIO_DECAY = 0.001
RETRACT_RATIO_STEP = 0.2


@dataclass(slots=True)
class ScheduledSlice:
    req: Req
    extend_len: int
    is_prefill: bool
    step_request: StepRequest
    epoch: int = 0  # req.retractions when scheduled: a retraction since voids the slice's KV
    launch: int = -1  # the scheduler's number of the launch that ran it


@dataclass(slots=True)
class BatchPlan:
    slices: list[ScheduledSlice] = field(default_factory=list)
    retracted: list[Req] = field(default_factory=list)
    cache_hit_tokens: int = 0


def shares_more_than(a: list[int], b: list[int], length: int) -> bool:
    """Whether a and b share a prefix longer than `length` tokens. Admission asks this of every
    waiting request against every prefilling one, every step (256 few-shot prompts on one prefix:
    tens of thousands of pairs), so the token at `length` is compared first: prompts that part
    earlier almost always differ there, and the one slice compare (in C) runs only when it
    matches."""
    if len(a) <= length or len(b) <= length or a[length] != b[length]:
        return False
    return a[: length + 1] == b[: length + 1]


class BatchBuilder:
    def __init__(self, kv: RequestKVManager, config: SchedulerConfig) -> None:
        self.kv = kv
        self.cache = kv.cache
        self.config = config
        self.new_token_ratio = INIT_NEW_TOKEN_RATIO

    def build(self, waiting: list[Req], running: list[Req]) -> BatchPlan:
        plan = BatchPlan()
        self._schedule_decodes(waiting, running, plan)
        budget = min(self.config.chunked_prefill_size, self.config.max_prefill_tokens)
        budget = self._continue_prefills(waiting, running, plan, budget)
        self._admit(waiting, running, plan, budget)
        if not plan.retracted:
            self.new_token_ratio = max(
                MIN_NEW_TOKEN_RATIO, self.new_token_ratio - NEW_TOKEN_RATIO_DECAY
            )
        return plan

    # --- running requests ----------------------------------------------------------------------

    def _schedule_decodes(self, waiting: list[Req], running: list[Req], plan: BatchPlan) -> None:
        context_len = self.config.context_len
        decodes = [
            r
            for r in running
            if not r.is_prefilling and (r.future is None or not r.ends_with_future(context_len))
        ]
        while len(decodes) > 1:
            if self.kv.decode_pages_needed(decodes) <= self._headroom():
                break
            victim = min(decodes, key=lambda r: (len(r.output_ids), -len(r.prompt_ids)))
            decodes.remove(victim)
            self._retract(victim, waiting, running, plan)
        for req in decodes:
            drafts = self._drafts(req)
            if drafts and self.kv.reserve(req, 1 + len(drafts)):
                plan.slices.append(self._decode_slice(req, drafts))
            elif self.kv.reserve(req, 1):
                decode = req.output_ids or req.future is not None
                plan.slices.append(self._decode_slice(req) if decode else self._slice(req, 1))
            else:
                self._retract(req, waiting, running, plan)

    def _continue_prefills(
        self, waiting: list[Req], running: list[Req], plan: BatchPlan, budget: int
    ) -> int:
        for req in [r for r in running if r.is_prefilling]:
            if budget <= 0:
                break
            chunk = min(req.fill_len - req.kv_len, budget)
            if self.kv.reserve(req, chunk):
                plan.slices.append(self._slice(req, chunk))
                budget -= chunk
            elif len(running) > 1:
                self._retract(req, waiting, running, plan)
        return budget

    def _retract(self, req: Req, waiting: list[Req], running: list[Req], plan: BatchPlan) -> None:
        self.kv.release(req)
        running.remove(req)
        waiting.insert(0, req)
        req.retractions += 1
        # A sample in flight means the prompt is done: no recompute would bring them back.
        if not req.input_logprobs_sent and req.future is None:
            req.input_logprobs.clear()
            req.input_top_logprobs.clear()
        plan.retracted.append(req)
        self.new_token_ratio = min(1.0, self.new_token_ratio + RETRACT_RATIO_STEP)

    # --- admission -----------------------------------------------------------------------------

    def _admit(self, waiting: list[Req], running: list[Req], plan: BatchPlan, budget: int) -> None:
        if not waiting or budget <= 0:
            return
        reserved = sum(self._future_pages(r) for r in running)
        prefilling = [r.fill_ids for r in running if r.is_prefilling]
        self.kv.poll_loads()
        for req in order_waiting(self.config.schedule_policy, list(waiting), self.kv.match):
            if budget <= 0 or len(running) >= self.config.max_running_requests:
                break
            if req.future is not None:  # retracted with a sample in flight: admit it after
                continue
            if req.loading is not None and not req.loading.done():
                continue  # its KV is on its way back from the host tier
            ready, match = self.kv.ready(req, self.kv.match(req))
            if not ready:
                continue
            if self._shares_with_prefilling(req, match.cached_len, prefilling):
                continue  # admit after the other prefill lands in the tree
            self.kv.admit(req, match)
            chunk = min(req.fill_len - req.kv_len, budget)
            fits = self._future_pages(req) + reserved <= self._headroom()
            if not (fits or not running) or not self.kv.reserve(req, chunk):
                self.kv.release(req)
                break
            waiting.remove(req)
            running.append(req)
            reserved += self._future_pages(req)
            plan.cache_hit_tokens += req.kv_len
            plan.slices.append(self._slice(req, chunk))
            budget -= chunk
            if req.is_prefilling or chunk < req.fill_len:
                prefilling.append(req.fill_ids)

    def _shares_with_prefilling(
        self, req: Req, cached_len: int, prefilling: list[list[int]]
    ) -> bool:
        if not self.cache.shares_prefixes:  # nothing will land in the tree to wait for
            return False
        fill = req.fill_ids
        slack = cached_len + self.kv.page_size
        return any(shares_more_than(fill, other, slack) for other in prefilling)

    def _future_pages(self, req: Req) -> int:
        expected = req.fill_len + int(req.remaining_new_tokens() * self.new_token_ratio)
        expected = min(expected, self.config.context_len)
        return max(pages_for(expected, self.kv.page_size) - len(req.page_table), 0)

    def _headroom(self) -> int:
        return self.cache.num_free_pages + self.cache.num_evictable_pages

    # --- building the runner's view ------------------------------------------------------------

    def _decode_slice(self, req: Req, drafts: list[int] | None = None) -> ScheduledSlice:
        """The common case, built directly: one new token after outputs, so no prompt logprobs
        (they end with the prompt) and the slice is the last sampled token. With n-gram
        `drafts` the slice is [last, *drafts], with logits on every row for the verification."""
        last = req.output_ids[-1] if req.future is None else req.future
        step_request = StepRequest(
            slice=RequestSlice(
                [last, *(drafts or ())],
                req.kv_len,
                req.page_table,
                0 if drafts else None,
            ),
            sampling=req.sampling,
            prompt_ids=req.prompt_ids,
            output_ids=req.output_ids,
            sample=True,
            return_logprob=req.return_logprob,
            top_logprobs_num=req.top_logprobs_num,
            draft_token_ids=drafts or None,
        )
        return ScheduledSlice(req, 1 + len(drafts or ()), False, step_request, req.retractions)

    def may_draft(self, req: Req) -> bool:
        """Speculation is on and exact for this request's sampling: greedy, no penalties (they
        would change with each kept token), no logit bias (the verification takes the raw
        argmax), no logprobs."""
        params = req.sampling
        return (
            self.config.num_draft_tokens > 0
            and params.is_greedy
            and not params.uses_penalties
            and not params.logit_bias
            and not req.return_logprob
        )

    def _drafts(self, req: Req) -> list[int]:
        """N-gram drafts for a decode, where `may_draft` and no min_new_tokens is pending (its
        bans would change the argmax). Under a grammar, only the drafts the grammar accepts are
        proposed. None while a sample is in flight: the lookup needs the latest token."""
        if not self.may_draft(req) or req.future is not None:
            return []
        budget = min(
            self.config.num_draft_tokens,
            req.remaining_new_tokens() - 1,  # the model's own token comes on top
            self.config.context_len - req.fill_len - 1,
        )
        if budget <= 0 or not req.output_ids or req.sampling.min_new_tokens > len(req.output_ids):
            return []
        drafts = propose_drafts(req.fill_ids, budget, self.config.ngram_max, self.config.ngram_min)
        if drafts and req.grammar is not None:
            drafts = drafts[: req.grammar.valid_prefix_len(drafts)]
        return drafts

    def _slice(self, req: Req, extend_len: int) -> ScheduledSlice:
        fill_len = req.fill_len
        end = req.kv_len + extend_len
        logits_from = None
        if req.wants_input_logprobs:
            first_row = max(req.logprob_start_len - 1, 0)
            if first_row < end:
                logits_from = max(first_row - req.kv_len, 0)
        step_request = StepRequest(
            slice=RequestSlice(
                req.fill_slice(req.kv_len, end), req.kv_len, req.page_table, logits_from
            ),
            sampling=req.sampling,
            prompt_ids=req.prompt_ids,
            output_ids=req.output_ids,
            sample=end == fill_len,
            return_logprob=req.return_logprob,
            top_logprobs_num=req.top_logprobs_num,
        )
        # A decode feeds exactly the last sampled token; anything else computes prompt KV.
        is_decode = extend_len == 1 and end == fill_len and bool(req.output_ids)
        return ScheduledSlice(req, extend_len, not is_decode, step_request, req.retractions)
