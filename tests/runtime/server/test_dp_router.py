"""The data-parallel router alone: prompts with a shared prefix stay together, distinct ones
spread out, load overrides the cache past the threshold, and the approximate trees stay bounded."""

from __future__ import annotations

import pytest

from radixserve.runtime.server.dp_router import BALANCE_ABS_THRESHOLD, DataParallelRouter

PAGE = 4


def family(prefix_token: int, suffix: int, length: int = 64) -> list[int]:
    return [prefix_token] * length + [1000 + suffix] * 8


def test_cache_aware_keeps_prefix_families_on_one_replica_each() -> None:
    router = DataParallelRouter(2, "cache_aware", num_pages=1024, page_size=PAGE)
    first_a = router.route(family(1, 0))
    first_b = router.route(family(2, 0))
    assert first_a.reason == first_b.reason == "load"
    assert first_a.replica != first_b.replica  # the empty tree wins the tie
    for i in range(1, 6):
        for token, home in ((1, first_a.replica), (2, first_b.replica)):
            decision = router.route(family(token, i))
            assert (decision.replica, decision.reason) == (home, "cache")
            assert decision.matched_tokens == 64
            router.finished(decision.replica)


def test_load_wins_over_the_cache_past_the_threshold() -> None:
    router = DataParallelRouter(2, "cache_aware", num_pages=1024, page_size=PAGE)
    home = router.route(family(1, 0)).replica
    for i in range(BALANCE_ABS_THRESHOLD):
        assert router.route(family(1, i + 1)).replica == home  # in flight, never finished
    assert router.route(family(1, 99)).replica != home


def test_short_matches_do_not_count() -> None:
    router = DataParallelRouter(2, "cache_aware", num_pages=1024, page_size=PAGE)
    home = router.route([5] * 8 + [7] * 100).replica
    router.finished(home)
    other = router.route([5] * 8 + [9] * 100)  # 8 of 108 tokens match: below the threshold
    assert other.reason == "load" and other.replica != home


def test_round_robin_and_shortest_queue() -> None:
    rr = DataParallelRouter(3, "round_robin", num_pages=64, page_size=PAGE)
    assert [rr.route(family(1, i)).replica for i in range(6)] == [0, 1, 2, 0, 1, 2]
    sq = DataParallelRouter(2, "shortest_queue", num_pages=64, page_size=PAGE)
    a = sq.route(family(1, 0)).replica
    b = sq.route(family(1, 1)).replica
    assert a != b  # the same prefix, but this method looks at load only


def test_trees_stay_within_the_replica_size() -> None:
    router = DataParallelRouter(1, "cache_aware", num_pages=16, page_size=PAGE)
    for i in range(50):
        router.route([i] * 40)  # 10 pages each: older prompts are evicted
        router.trees[0].check_integrity()
    assert router.trees[0].stats().cached_tokens <= 16 * PAGE
    router.route([3] * 1000)  # longer than the whole tree: only what fits is kept
    router.trees[0].check_integrity()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="load balance method"):
        DataParallelRouter(2, "random", num_pages=16, page_size=PAGE)
    with pytest.raises(ValueError, match="dp_size"):
        DataParallelRouter(0, "cache_aware", num_pages=16, page_size=PAGE)


def test_the_offline_engine_refuses_data_parallelism() -> None:
    from radixserve import Engine

    with pytest.raises(ValueError, match="dp_size > 1 needs the server"):
        Engine(dp_size=2)


def scheduler_stats(finished: int, hits: int, asked: int, integrity: str | None):
    """One replica's stats: `finished` requests, `hits` of `asked` prompt tokens matched."""
    from radixserve.radix_cache.base import CacheStats
    from radixserve.runtime.wire.stats import SchedulerStats, StepStats

    cache = CacheStats(
        num_pages=100,
        page_size=16,
        free_pages=50,
        cached_tokens=800,
        evictable_tokens=800,
        locked_tokens=0,
        hit_tokens=hits,
        total_match_tokens=asked,
        hit_rate=hits / asked,
        evicted_pages=finished,
        num_nodes=3,
    )
    return SchedulerStats(
        requests_finished=finished,
        last_step=StepStats(kv_usage=0.5 if finished else 0.1),
        waiting=1,
        running=finished,
        num_pages=100,
        free_pages=50,
        cache=cache,
        integrity=integrity,
    )


def test_replica_stats_merge_counts_rates_and_integrity() -> None:
    import msgspec

    from radixserve.runtime.wire.stats import NOT_EVERYWHERE, SchedulerStats, merge_replicas

    replicas = [scheduler_stats(0, 0, 300, "ok"), scheduler_stats(3, 90, 100, "ok")]
    merged = merge_replicas(replicas)
    assert merged.requests_finished == 3 and merged.num_pages == 200 and merged.waiting == 2
    assert merged.last_step.kv_usage == pytest.approx(0.3)
    assert merged.cache.hit_rate == pytest.approx(90 / 400)  # a rate of the sums
    assert merged.cache.page_size == 16  # a shared setting, not summed like the counts
    assert merged.integrity == "ok"
    assert [r.requests_finished for r in merged.replicas] == [0, 3]  # by replica
    busy = merge_replicas([scheduler_stats(1, 1, 2, "ok"), scheduler_stats(1, 1, 2, None)])
    assert busy.integrity == NOT_EVERYWHERE
    broken = merge_replicas([scheduler_stats(1, 1, 2, "ok"), scheduler_stats(1, 1, 2, "broken")])
    assert broken.integrity == "ok; broken"
    # What /get_server_info shows: the counters at the top level, replicas only when merged.
    wire = msgspec.json.decode(msgspec.json.encode(merged), type=SchedulerStats)
    assert wire == merged
    alone = msgspec.to_builtins(replicas[0])
    assert alone["requests_finished"] == 0 and alone["replicas"] == []
