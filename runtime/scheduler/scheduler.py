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

import msgspec

from ...radix_cache import PrefixCache
from ..wire.messages import AbortCode, DetokenizeSpec, FinishReason, GenerateReq, TokenOut
from ..wire.stats import SchedulerCounters, SchedulerStats, StepStats
from .batch_builder import BatchBuilder, ScheduledSlice
from .config import SchedulerConfig
from .grammar import GrammarBackend, RequestGrammar
from .kv_manager import RequestKVManager
from .request import Req
from .results import ResultApplier
from .step import StepRequest, StepRunner

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        runner: StepRunner,
        cache: PrefixCache,
        config: SchedulerConfig,
        eos_token_ids: Collection[int],
        sharing: bool = True,
        grammar_backend: GrammarBackend | None = None,
        jump_forward: bool = True,
    ) -> None:
        self.runner = runner
        self.cache = cache
        self.config = config
        self.eos_token_ids = frozenset(eos_token_ids)
        self.grammar_backend = grammar_backend  # None: structured output is refused
        self.kv = RequestKVManager(cache, config.page_size, sharing)
        self.builder = BatchBuilder(self.kv, config)
        self.waiting: list[Req] = []
        self.running: list[Req] = []
        self.requests: dict[str, Req] = {}
        self.counters = SchedulerCounters()
        self.last_step = StepStats()
        self.results = ResultApplier(
            self.kv, config, self.eos_token_ids, self.counters, jump_forward
        )

    @property
    def jump_forward(self) -> bool:
        return self.results.jump_forward

    @jump_forward.setter
    def jump_forward(self, on: bool) -> None:
        self.results.jump_forward = on

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
                self.results.apply(scheduled, result)
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
        constrained: list[tuple[StepRequest, RequestGrammar]] = []
        for scheduled in slices:
            request, grammar = scheduled.step_request, scheduled.req.grammar
            if grammar is None or not request.sample:
                continue
            if request.draft_token_ids:  # a mask per verified row
                request.vocab_mask = grammar.draft_bitmasks(list(request.draft_token_ids))
            else:
                constrained.append((request, grammar))
        if not constrained or self.grammar_backend is None:  # no backend: no grammar admitted
            return
        masks = self.grammar_backend.allowed_tokens_bitmasks([g for _, g in constrained])
        for (request, _), mask in zip(constrained, masks, strict=True):
            request.vocab_mask = mask

    def finish_externally(self, rid: str, finish: FinishReason) -> None:
        """Ends a request for a reason found outside: a stop string the detokenizer matched
        (counted as finished), or text it could not decode (counted as aborted).

        Called between steps (the server's `FinishReq`, the offline Engine directly). Its pages
        and locks go back now; no output follows, as whoever found the reason has already sent
        the final one. A no-op if the request has ended already.
        """
        req = self.requests.get(rid)
        if req is not None and req.finish is None:
            req.finish = finish
            self._retire(req)
            if finish.type == "abort":
                self.counters.requests_aborted += 1
            else:
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

    def stats(self) -> SchedulerStats:
        """Counters, the last step's figures and the cache's statistics."""
        stats = SchedulerStats(
            **msgspec.structs.asdict(self.counters),
            last_step=self.last_step,
            waiting=len(self.waiting),
            running=len(self.running),
            num_pages=self.cache.num_pages,
            free_pages=self.cache.num_free_pages,
            cache=self.cache.stats(),
        )
        if not self.has_work:
            # Only when idle: the check walks the whole tree, too slow to run under load on every
            # metrics scrape, and an idle runtime is where a leaked page or lock would show.
            stats.integrity = self.integrity_report()
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
