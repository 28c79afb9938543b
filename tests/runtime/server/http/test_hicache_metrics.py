"""The host tier's figures reach /metrics and the stats the servers' info endpoints show: from a
real hierarchical cache after a write-back and a load-back, and at zero without the tier (so a
dashboard's series exist from the start)."""

from __future__ import annotations

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from radixserve.radix_cache import RadixCache
from radixserve.radix_cache.base import PrefixCache
from radixserve.radix_cache.hicache import HierarchicalRadixCache
from radixserve.runtime.server.http.metrics import ServerMetrics
from radixserve.runtime.wire.stats import SchedulerStats, StepStats

TIER_FIELDS = (
    "host_pages",
    "host_free_pages",
    "host_cached_tokens",
    "host_hit_tokens",
    "load_back_tokens",
    "load_back_seconds",
    "write_back_tokens",
    "host_evicted_pages",
)


def samples_for(cache: PrefixCache, step: StepStats) -> dict[str, float]:
    metrics = ServerMetrics()
    metrics.scheduler.stats = SchedulerStats(
        running=0,
        waiting=0,
        num_pages=cache.num_pages,
        free_pages=cache.num_free_pages,
        last_step=step,
        cache=cache.stats(),
    )
    # Through the wire, as the scheduler process sends it.
    wire = msgspec.msgpack.decode(
        msgspec.msgpack.encode(metrics.scheduler.stats), type=SchedulerStats
    )
    assert wire.last_step == step and wire.cache == cache.stats()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_tier_figures_are_exported() -> None:
    cache = HierarchicalRadixCache(4, page_size=2, host_pages=8)
    first = cache.insert([1, 2, 3, 4], cache.alloc_pages(2) or [])
    assert first.cached_len == 0
    cache.insert([5, 6, 7, 8], cache.alloc_pages(2) or [])  # the pool is full now
    assert cache.alloc_pages(2) is not None  # evicts [1 2 3 4] to the host
    match = cache.match_prefix([1, 2, 3, 4])
    assert match.host_len == 4
    ticket = cache.load_back(match)  # evicts [5 6 7 8] to the host in turn
    assert ticket is not None and ticket.done()
    cache.poll_loads()
    cache.unlock(ticket.node)
    step = StepStats(host_hit_tokens=4, load_back_tokens=4, write_back_tokens=8)
    samples = samples_for(cache, step)
    stats = cache.stats()
    for name in TIER_FIELDS:
        assert samples[f"radixserve_radix_cache_{name}"] == getattr(stats, name)
    assert (stats.write_back_tokens, stats.load_back_tokens, stats.host_hit_tokens) == (8, 4, 4)
    assert stats.host_pages == 8 and stats.host_free_pages == 4 and stats.host_cached_tokens == 8


def test_tier_series_start_at_zero_without_the_tier() -> None:
    samples = samples_for(RadixCache(4, page_size=2), StepStats())
    for name in TIER_FIELDS:
        assert samples[f"radixserve_radix_cache_{name}"] == 0
