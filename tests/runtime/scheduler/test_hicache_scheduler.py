"""The scheduler over the hierarchical cache, with the stand-in runner: its slot store is the
device KV, and a mover copies slots to a host store and back, so a page that came back wrong
changes the outputs exactly as wrong KV would. Multi-turn sessions whose histories outgrow the
device pool: outputs equal the reference, prefixes come back from the host (cached_tokens cover
them and fewer prompt tokens are computed), loads held in flight keep their request waiting,
and an abort during a load returns every page of both tiers."""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence

from radixserve.radix_cache.hicache import HierarchicalRadixCache
from radixserve.radix_cache.host_tier import DONE, ManualTransfer, Transfer
from radixserve.runtime.scheduler.scheduler import Scheduler, SchedulerConfig
from tests.runtime.scheduler.stand_in_runner import StandInRunner, expected_output
from tests.runtime.scheduler.test_scheduler import EOS, VOCAB, request, run_all


class SlotMover:
    """Copies whole pages of the stand-in runner's slot store to a host store and back."""

    def __init__(self, runner: StandInRunner, host_pages: int, defer_loads: bool = False) -> None:
        self.runner = runner
        self.ps = runner.page_size
        self.host = array("q", [-1] * (host_pages * self.ps))
        self.defer_loads = defer_loads
        self.pending: list[ManualTransfer] = []

    def write_back(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        ps, slots = self.ps, self.runner.slots
        for d, h in zip(device_pages, host_pages, strict=True):
            self.host[h * ps : (h + 1) * ps] = slots[d * ps : (d + 1) * ps]
            slots[d * ps : (d + 1) * ps] = array("q", [-7] * ps)  # the device copy is gone

    def load_back(self, host_pages: Sequence[int], device_pages: Sequence[int]) -> Transfer:
        ps, slots = self.ps, self.runner.slots
        values = [self.host[h * ps : (h + 1) * ps] for h in host_pages]
        targets = list(device_pages)

        def land() -> None:
            for d, value in zip(targets, values, strict=True):
                slots[d * ps : (d + 1) * ps] = value

        if not self.defer_loads:
            land()
            return DONE
        transfer = ManualTransfer(land)
        self.pending.append(transfer)
        return transfer

    def finish_all(self) -> None:
        for transfer in self.pending:
            transfer.finish()
        self.pending.clear()


def make(
    num_pages: int, page_size: int, host_pages: int, tier: bool = True, defer: bool = False
) -> tuple[Scheduler, SlotMover | None]:
    runner = StandInRunner(num_pages, page_size, VOCAB)
    mover = SlotMover(runner, host_pages, defer) if tier else None
    if mover is not None:
        cache = HierarchicalRadixCache(num_pages, page_size, host_pages=host_pages, mover=mover)
    else:
        from radixserve.radix_cache import RadixCache

        cache = RadixCache(num_pages, page_size)
    config = SchedulerConfig(
        page_size=page_size,
        context_len=4096,
        chunked_prefill_size=256,
        max_prefill_tokens=256,
        max_running_requests=8,
    )
    return Scheduler(runner, cache, config, [EOS]), mover


def sessions(scheduler: Scheduler, count: int, turns: int, seed: int = 0) -> tuple[int, int]:
    """Multi-turn sessions, a turn of every session per round; checks every output against the
    reference. Returns (prompt tokens computed, cached tokens reported)."""
    rng = random.Random(seed)
    histories = [[rng.randrange(VOCAB) for _ in range(60)] for _ in range(count)]
    cached = 0
    for turn in range(turns):
        for s in range(count):
            histories[s] += [rng.randrange(VOCAB) for _ in range(rng.randrange(5, 30))]
            scheduler.add_request(request(f"s{s}t{turn}", list(histories[s]), 8))
        results = run_all(scheduler)
        for s in range(count):
            out, last = results[f"s{s}t{turn}"]
            assert out == expected_output(histories[s], 8)
            cached += last.cached_tokens  # type: ignore[attr-defined]
            histories[s] += out
    runner = scheduler.runner
    assert isinstance(runner, StandInRunner)
    return runner.prefill_tokens, cached


def test_sessions_outgrowing_the_device_come_back_from_the_host() -> None:
    figures = {}
    for tier in (False, True):
        scheduler, _ = make(num_pages=160, page_size=4, host_pages=1200, tier=tier)
        figures[tier] = sessions(scheduler, count=8, turns=5)
        stats = scheduler.cache.stats()
        if tier:
            assert stats.host_hit_tokens > 0 and stats.load_back_tokens > 0
            assert stats.write_back_tokens > 0
            assert scheduler.counters.cache_hit_tokens >= figures[True][1]
    (computed_off, cached_off), (computed_on, cached_on) = figures[False], figures[True]
    assert cached_on > cached_off and computed_on < computed_off


def test_pressure_on_both_tiers() -> None:
    scheduler, _ = make(num_pages=120, page_size=2, host_pages=150)
    sessions(scheduler, count=10, turns=4, seed=3)  # checks outputs and integrity every step
    stats = scheduler.cache.stats()
    assert stats.host_evicted_pages > 0 and stats.load_back_tokens > 0
    assert scheduler.flush_cache()
    scheduler.check_integrity()
    cache = scheduler.cache
    assert isinstance(cache, HierarchicalRadixCache)
    assert cache.num_free_pages == 120 and cache.host.num_free == 150


def written_back_prefix(defer: bool) -> tuple[Scheduler, SlotMover, list[int]]:
    """A scheduler whose first prompt went to the host tier (pushed out by a second one)."""
    scheduler, mover = make(num_pages=64, page_size=4, host_pages=256, defer=defer)
    assert mover is not None
    rng = random.Random(1)
    first = [rng.randrange(VOCAB) for _ in range(120)]
    scheduler.add_request(request("a", first, 4))
    run_all(scheduler)
    scheduler.add_request(request("b", [rng.randrange(VOCAB) for _ in range(200)], 4))
    run_all(scheduler)
    match = scheduler.cache.match_prefix(first)
    assert match.host_len >= 100, "the first prompt should be on the host now"
    return scheduler, mover, first


def test_a_request_waits_for_its_load_and_gets_cached_tokens() -> None:
    scheduler, mover, first = written_back_prefix(defer=True)
    scheduler.add_request(request("c", first + [5, 6, 7], 4))
    for _ in range(3):  # the load is held in flight: the request must not be admitted
        assert scheduler.step() == []
        assert [r.rid for r in scheduler.waiting] == ["c"] and not scheduler.running
        scheduler.check_integrity()
    assert scheduler.last_step.host_hit_tokens == 0  # counted in the step that started it
    mover.finish_all()
    results = run_all(scheduler)
    out, last = results["c"]
    assert out == expected_output(first + [5, 6, 7], 4)
    assert last.cached_tokens >= 120 // 4 * 4 - 4  # type: ignore[attr-defined]


def test_abort_during_load_back_returns_every_page_of_both_tiers() -> None:
    scheduler, mover, first = written_back_prefix(defer=True)
    cache = scheduler.cache
    assert isinstance(cache, HierarchicalRadixCache)
    scheduler.add_request(request("c", first + [9], 4))
    scheduler.step()
    assert scheduler.waiting[0].loading is not None
    scheduler.abort("c")
    outputs = scheduler.step()
    assert [o.rid for o in outputs] == ["c"] and outputs[0].finish is not None
    assert not scheduler.has_work
    scheduler.check_integrity()
    assert cache.num_locked_pages > 0  # the copy is still in flight: its pages stay pinned
    mover.finish_all()
    assert scheduler.flush_cache()
    scheduler.check_integrity()
    assert cache.num_free_pages == cache.num_pages and cache.host.num_free == cache.host.num_pages
    assert cache.num_locked_pages == 0
