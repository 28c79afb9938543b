"""Scheduler statistics as typed messages: what a scheduler counts, and how replicas add up.

The scheduler keeps `SchedulerCounters` and the last `StepStats`; a stats request answers one
`SchedulerStats` (the counters' fields at the top level, as `/get_server_info` shows them). With
data parallelism the server merges the replicas' answers field by field (`merge_replicas`):

    int fields      summed (requests, tokens, pages), except the cache's page size
    float fields    averaged (fractions, seconds), except the cache's hit rate: hits / asked
    str fields      the common value, or every distinct one joined ("ok" only if all say "ok")
    nested          merged the same way; `replicas` keeps each replica's own answer
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import msgspec

from ...radix_cache.base import CacheStats

T = TypeVar("T")
NOT_EVERYWHERE = "not reported by every replica"


class StepStats(msgspec.Struct, kw_only=True):
    """One scheduler step: the batch it launched, and where the step's wall time went.

    Under overlap scheduling a step launches batch N+1 and then collects batch N, so the
    device figures (device_wait_seconds, device_seconds) are batch N's:

        wall_seconds = build + launch + device_wait + results (+ dropping aborted requests)
        schedule_seconds = wall_seconds - forward_seconds    the scheduler's own CPU time
        forward_seconds = launch_seconds + device_wait_seconds
    GPU-busy share over a run: sum(device_seconds) / sum(wall_seconds).
    """

    batch_size: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    cache_hit_tokens: int = 0
    queue_depth: int = 0
    running: int = 0
    kv_usage: float = 0.0  # fraction of pages not free
    schedule_seconds: float = 0.0  # CPU time spent deciding the batch (not the forward pass)
    forward_seconds: float = 0.0  # time inside the runner: launching, and waiting on the device
    build_seconds: float = 0.0  # choosing the batch, allocating pages, masks and bans
    launch_seconds: float = 0.0  # the runner's launch: metadata, planning, enqueuing the work
    device_wait_seconds: float = 0.0  # blocked in the runner's collect until results are back
    result_seconds: float = 0.0  # applying results, finishes, commits, outputs
    # Device time of the batch collected in this step (CUDA events; the launch itself where
    # the device is the CPU); 0 where the runner does not measure it.
    device_seconds: float = 0.0
    wall_seconds: float = 0.0
    overlapped: bool = False  # the launched batch stays in flight until the next step
    # The hierarchical cache's host tier in this step (0 without it): matched tokens found on
    # the host, tokens whose copy back to the device started, tokens copied to the host.
    host_hit_tokens: int = 0
    load_back_tokens: int = 0
    write_back_tokens: int = 0


class SchedulerCounters(msgspec.Struct, kw_only=True):
    steps: int = 0
    requests_finished: int = 0
    requests_aborted: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    cache_hit_tokens: int = 0
    prompt_tokens: int = 0
    retractions: int = 0
    jump_forward_tokens: int = 0  # grammar-forced tokens appended without a decode step each
    spec_draft_tokens: int = 0  # n-gram drafts proposed to the model
    spec_accepted_tokens: int = 0  # ... of which the model agreed with (one step saved each)
    overlapped_steps: int = 0  # steps whose batch stayed in flight into the next step
    dropped_results: int = 0  # results of requests that ended while in flight (wasted decodes)
    wall_seconds: float = 0.0  # the steps' total wall time ...
    device_seconds: float = 0.0  # ... and the device's share of it (see StepStats)

    def add(self, step: StepStats) -> None:
        self.steps += 1
        self.prefill_tokens += step.prefill_tokens
        self.decode_tokens += step.decode_tokens
        self.overlapped_steps += step.overlapped
        self.wall_seconds += step.wall_seconds
        self.device_seconds += step.device_seconds


class SchedulerStats(SchedulerCounters, kw_only=True):
    """One scheduler's (or, merged, all replicas') counters and state at a stats request."""

    last_step: StepStats
    waiting: int
    running: int
    # Tokens the waiting requests still need in the KV pool: a request counts for the router's
    # load from its arrival, not only once it holds pages (SGLang adds the waiting queue too).
    waiting_tokens: int = 0
    num_pages: int
    free_pages: int
    cache: CacheStats
    # 'ok' or what check_integrity found; None while requests run (the walk is too slow then).
    integrity: str | None = None
    replicas: list[SchedulerStats] = []  # data parallelism: each replica's own, by dp rank


def merge_replicas(replicas: list[SchedulerStats]) -> SchedulerStats:
    """All replicas as one (see the module docstring); `replicas` holds them in order."""
    if len(replicas) == 1:
        return replicas[0]
    merged = _merge(replicas)
    cache = merged.cache
    merged.cache = dataclasses.replace(
        cache,
        hit_rate=cache.hit_tokens / cache.total_match_tokens if cache.total_match_tokens else 0.0,
        page_size=replicas[0].cache.page_size,  # a setting every replica shares, not a count
    )
    merged.replicas = list(replicas)
    return merged


def _merge(values: list[T]) -> T:
    first = values[0]
    if isinstance(first, msgspec.Struct):
        names = [n for n in first.__struct_fields__ if n != "replicas"]
        fields = {n: _merge([getattr(v, n) for v in values]) for n in names}
        return msgspec.structs.replace(first, **fields)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        names = [f.name for f in dataclasses.fields(first)]
        fields = {n: _merge([getattr(v, n) for v in values]) for n in names}
        return dataclasses.replace(first, **fields)  # type: ignore[type-var]
    return _merge_value(values)  # type: ignore[return-value]


def _merge_value(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, bool):
        return first
    if isinstance(first, int) and all(isinstance(v, int) for v in values):
        return sum(values)
    if isinstance(first, (int, float)) and all(isinstance(v, (int, float)) for v in values):
        return sum(values) / len(values)
    if any(isinstance(v, str) for v in values):
        if any(v is None for v in values):
            return NOT_EVERYWHERE
        distinct = list(dict.fromkeys(str(v) for v in values))
        return distinct[0] if len(distinct) == 1 else "; ".join(distinct)
    return first
