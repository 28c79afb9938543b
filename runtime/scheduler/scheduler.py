"""The scheduling loop's core, free of I/O: requests in, one step at a time, token outputs out.

Each `step()`:
  1. drops aborted requests (their pages and locks go back);
  2. gives every decoding request one token, retracting the cheapest ones if the pool is short;
  3. continues running prefills in chunks under the step's token budget;
  4. admits waiting requests in policy order (match + lock their cached prefix) while the budget,
     `max_running_requests` and a reservation for their expected new tokens allow;
  5. launches the batch on the model runner, then collects it: appends sampled tokens, checks stops,
     and moves computed pages into the radix tree so later requests share them.
The runner is any `StepRunner` (launch / collect), so tests can stand one in.

Overlap scheduling (`overlap=True`) leaves each batch in flight until the next step has launched
its own, so the device never waits for the host's bookkeeping:

    step N+1:  drop aborted | build N+1 | launch N+1 | collect N, apply N, outputs of N
               (a decode whose input is N's sample feeds its placeholder, resolved on the device)

A request that N ends may run one wasted decode in N+1; its result is dropped. A batch with a
request that needs its sample on the host before its next slice can be built (a grammar's next
mask or forced tokens, n-gram drafts) is collected at once, as without overlap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

import msgspec

from ...radix_cache import PrefixCache
from ..wire.messages import AbortCode, FinishReason, GenerateReq, TokenOut
from ..wire.stats import SchedulerCounters, SchedulerStats, StepStats
from .batch_builder import BatchBuilder, ScheduledSlice
from .config import SchedulerConfig
from .constraints import attach_vocab_masks, ban_early_stops
from .grammar import GrammarBackend
from .kv_manager import RequestKVManager
from .outputs import token_out
from .request import Req
from .results import ResultApplier
from .step import StepHandle, StepRunner, future_token

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class LaunchedBatch:
    slices: list[ScheduledSlice]
    handle: StepHandle
    synchronous: bool  # collected in the step that launched it


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
        overlap: bool = False,
    ) -> None:
        self.runner = runner
        self.overlap = overlap  # launch step N+1 before collecting step N
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
        self.inflight: LaunchedBatch | None = None  # overlap: the batch the next step collects
        self.launches = 0

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
        """Requests wait or run. A batch may still be in flight without: only ended requests'
        wasted decodes, whose results the next step (or `drain`) drops."""
        return bool(self.waiting or self.running)

    # --- one step ------------------------------------------------------------------------------

    def step(self) -> list[TokenOut]:
        started = time.perf_counter()
        tier_before = self.kv.tier_totals()
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
        constrained = attach_vocab_masks(plan.slices, self.grammar_backend)
        ban_early_stops(plan.slices, self.eos_token_ids)
        stats.build_seconds = time.perf_counter() - started
        launched = None
        if plan.slices:
            synchronous = not self.overlap or constrained or self._drafting(plan.slices)
            launched = self._launch(plan.slices, stats, synchronous)
        previous, self.inflight = self.inflight, None
        if previous is not None:  # the device runs the new batch meanwhile
            outputs.extend(self._collect(previous, stats))
        if launched is not None and launched.synchronous:
            outputs.extend(self._collect(launched, stats))
        elif launched is not None:
            self.inflight, stats.overlapped = launched, True
        stats.wall_seconds = time.perf_counter() - started
        stats.forward_seconds = stats.launch_seconds + stats.device_wait_seconds
        # Everything but the runner's launch and the wait for the device is the scheduler's own.
        stats.schedule_seconds = stats.wall_seconds - stats.forward_seconds
        stats.queue_depth, stats.running = len(self.waiting), len(self.running)
        stats.kv_usage = 1.0 - self.cache.num_free_pages / max(self.cache.num_pages, 1)
        if self.kv.hierarchical:
            after = self.kv.tier_totals()
            stats.host_hit_tokens = after[0] - tier_before[0]
            stats.load_back_tokens = after[1] - tier_before[1]
            stats.write_back_tokens = after[2] - tier_before[2]
        self.counters.add(stats)
        self.last_step = stats
        self._maybe_log(stats)
        return outputs

    def _launch(
        self, slices: list[ScheduledSlice], stats: StepStats, synchronous: bool
    ) -> LaunchedBatch:
        """Hands the batch to the runner; its KV counts as computed from now on. Left in flight,
        each sample becomes its request's future: the next decode's input placeholder."""
        started = time.perf_counter()
        handle = self.runner.launch([s.step_request for s in slices])
        stats.launch_seconds = time.perf_counter() - started
        self.launches += 1
        launch = self.launches
        # The per-step hot path: one pass of attribute updates.
        if synchronous:
            for scheduled in slices:
                scheduled.req.kv_len += scheduled.extend_len
                scheduled.launch = launch
        else:
            for index, scheduled in enumerate(slices):
                req = scheduled.req
                req.kv_len += scheduled.extend_len
                scheduled.launch = launch
                if scheduled.step_request.sample:
                    req.future, req.future_launch = future_token(index), launch
        return LaunchedBatch(slices, handle, synchronous)

    def _drafting(self, slices: list[ScheduledSlice]) -> bool:
        """A sampling request may get n-gram drafts next step, which need its latest token on
        the host (grammar requests are the other kind: SGLang's overlap skips both)."""
        if self.config.num_draft_tokens <= 0:
            return False
        return any(s.step_request.sample and self.builder.may_draft(s.req) for s in slices)

    def _collect(self, batch: LaunchedBatch, stats: StepStats) -> list[TokenOut]:
        waited = time.perf_counter()
        results = self.runner.collect(batch.handle)
        arrived = time.perf_counter()
        stats.device_wait_seconds += arrived - waited
        stats.device_seconds += batch.handle.device_seconds or 0.0
        apply = self.results.apply
        applied = [s.req for s, r in zip(batch.slices, results, strict=True) if apply(s, r)]
        outputs = self._collect_outputs(applied)
        stats.result_seconds += time.perf_counter() - arrived
        return outputs

    def drain(self) -> list[TokenOut]:
        """Collects the batch in flight, if any (outputs only for requests still running)."""
        batch, self.inflight = self.inflight, None
        return self._collect(batch, StepStats()) if batch is not None else []

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
        self.inflight = None  # its requests are among `live`
        outputs = []
        for req in live:
            if req.rid in self.requests:  # not counted yet (finished or aborted) by the step
                self.counters.requests_aborted += 1
            req.aborted = True
            req.finish = FinishReason.abort(AbortCode.INTERNAL, message)
            self._retire(req)
            outputs.append(token_out(req))
        return outputs

    def _drop_aborted(self) -> list[TokenOut]:
        outputs = []
        for req in [r for r in self.waiting + self.running if r.aborted]:
            self._retire(req)
            outputs.append(token_out(req))
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
                outputs.append(token_out(req))
        return outputs

    def _maybe_log(self, stats: StepStats) -> None:
        interval = self.config.log_interval
        if interval and self.counters.steps % interval == 0:
            logger.info(
                "step %d: batch=%d prefill=%d decode=%d hit=%d queue=%d kv=%.1f%% sched=%.2fms "
                "step=%.1fms",
                self.counters.steps,
                stats.batch_size,
                stats.prefill_tokens,
                stats.decode_tokens,
                stats.cache_hit_tokens,
                stats.queue_depth,
                100 * stats.kv_usage,
                1e3 * stats.schedule_seconds,
                1e3 * stats.wall_seconds,
            )

    # --- maintenance ---------------------------------------------------------------------------

    def flush_cache(self) -> bool:
        """Evicts every cached prefix; refused while requests run (their paths are locked)."""
        if self.has_work:
            return False
        self.drain()  # only ended requests' wasted decodes can be in flight now
        self.cache.flush()
        return True

    def stats(self) -> SchedulerStats:
        """Counters, the last step's figures and the cache's statistics."""
        stats = SchedulerStats(
            **msgspec.structs.asdict(self.counters),
            last_step=self.last_step,
            waiting=len(self.waiting),
            running=len(self.running),
            waiting_tokens=sum(r.fill_len - r.kv_len for r in self.waiting),
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
