"""Bulk page operations (page_flags.py): long page lists take the numpy path, short ones the
Python loop; both must accept and refuse exactly the same calls, with the same messages."""

from __future__ import annotations

import numpy as np
import pytest

from radixserve.radix_cache import RadixCache
from radixserve.radix_cache.allocator import CACHED, FREE, HELD, PageAllocator
from radixserve.radix_cache.page_flags import BULK_MIN, PageFlags

SIZES = [3, BULK_MIN, 4 * BULK_MIN]  # the Python path, the threshold, the numpy path


@pytest.mark.parametrize("n", SIZES)
def test_alloc_free_round_trip_keeps_the_states(n: int) -> None:
    alloc = PageAllocator(8 * BULK_MIN)
    pages = alloc.alloc(n)
    assert len(set(pages)) == n and not any(alloc.is_free(p) for p in pages)
    alloc.take(pages[: n // 2])
    assert all(alloc.is_cached(p) for p in pages[: n // 2])
    alloc.release(np.asarray(pages[: n // 2]))
    alloc.free(pages[n // 2 :])
    assert alloc.num_free == alloc.num_pages and alloc.problem() is None
    assert sorted(alloc.free_list()) == list(range(alloc.num_pages))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda pages: pages + [10**6], "outside the pool"),
        (lambda pages: pages + [-1], "outside the pool"),
        (lambda pages: pages + pages[:1], "same page twice"),
        (lambda pages: pages + [0], "already free"),
    ],
)
def test_free_refuses_bad_lists_and_changes_nothing(n: int, corrupt, message: str) -> None:
    alloc = PageAllocator(8 * BULK_MIN)
    alloc.alloc(1)  # page 0 stays held: it must not be freed by the failed call
    pages = alloc.alloc(n)
    alloc.free([0])
    before = (alloc.free_list(), bytes(alloc.state.bytes))
    with pytest.raises(ValueError, match=message):
        alloc.free(corrupt(pages))
    assert (alloc.free_list(), bytes(alloc.state.bytes)) == before


@pytest.mark.parametrize("n", SIZES)
def test_a_cached_page_is_refused_by_free_and_take(n: int) -> None:
    alloc = PageAllocator(8 * BULK_MIN, holder="tree")
    pages = alloc.alloc(n)
    alloc.take(pages[:1])
    with pytest.raises(ValueError, match="tree owns: unlock it instead"):
        alloc.free(pages, "free_pages")
    with pytest.raises(ValueError, match="tree owns for other tokens"):
        alloc.take(pages)
    with pytest.raises(ValueError, match="release"):
        alloc.release(pages)  # all but one are held, not cached
    assert alloc.state.count(CACHED) == 1 and alloc.state.count(HELD) == n - 1


def test_flags_agree_on_both_paths() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        flags = PageFlags(200, FREE)
        pages = rng.choice(200, size=int(rng.integers(1, 80)), replace=True).tolist()
        small, bulk = flags._small_problem(pages, FREE), flags.problem(np.asarray(pages), FREE)
        assert (small is None) == (bulk is None)
        if small is not None and bulk is not None:
            assert small.kind == bulk.kind


def test_long_edges_evict_as_arrays_and_stay_consistent() -> None:
    cache = RadixCache(400, page_size=1)
    tokens = list(range(300))
    pages = cache.alloc_pages(300)
    assert pages is not None
    node = cache.insert(tokens, pages).node
    assert node.page_array is not None and node.page_array.tolist() == pages
    split = cache.match_prefix(tokens[:100] + [-5]).node  # splits the edge after 100 tokens
    assert split.page_array.tolist() == pages[:100] and node.page_array.tolist() == pages[100:]
    cache.check_integrity(held_pages=[])
    assert cache.evict(1) == 200 and cache.evict(1) == 100
    assert cache.num_free_pages == 400
    cache.check_integrity(held_pages=[])
