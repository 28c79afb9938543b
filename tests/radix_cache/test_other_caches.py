"""The naive (no sharing) and block-hash caches, and the registry."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from radixserve.radix_cache import (
    CACHE_REGISTRY,
    IntegrityError,
    NaiveCache,
    PrefixCache,
    RadixCache,
    cache_class,
    create_cache,
)
from radixserve.radix_cache.allocator import HELD
from radixserve.radix_cache.block_hash_cache import BlockHashCache

# --- naive -------------------------------------------------------------------------------------


def test_naive_never_matches_and_keeps_the_callers_pages() -> None:
    cache = NaiveCache(8, page_size=2)
    pages = cache.alloc_pages(2)
    result = cache.insert([1, 2, 3, 4], pages)
    assert (result.cached_len, result.pages) == (0, pages)
    assert cache.match_prefix([1, 2, 3, 4, 5]).cached_len == 0
    other = cache.alloc_pages(2)
    assert cache.insert([1, 2, 3, 4], other).pages == other  # no dedup: nothing is shared
    cache.check_integrity(held_pages=[])
    assert cache.num_evictable_pages == 4  # inserted, never locked
    assert cache.flush() == 4 and cache.num_free_pages == 8


def test_naive_chain_grows_and_is_freed_on_the_last_unlock() -> None:
    cache = NaiveCache(8, page_size=1)
    table = cache.alloc_pages(4)
    first = cache.insert([1, 2], table[:2])
    cache.lock(first.node)
    second = cache.insert([1, 2, 3], table[:3])  # the request's next chunk
    assert second.cached_len == 2 and second.node.parent is first.node
    cache.lock(second.node)
    cache.unlock(first.node)
    cache.check_integrity(held_pages=table[3:])
    assert cache.num_cached_pages == cache.num_locked_pages == 3
    cache.unlock(second.node)  # the request finished: everything goes back at once
    assert cache.num_cached_pages == 0 and cache.num_free_pages == 7
    cache.free_pages(table[3:])
    cache.check_integrity(held_pages=[])
    assert cache.stats().evicted_pages == 0  # releases are not evictions
    with pytest.raises(ValueError, match="freed"):
        cache.lock(second.node)


def test_naive_insert_of_a_shorter_prefix_splits_the_handle() -> None:
    cache = NaiveCache(8, page_size=1)
    table = cache.alloc_pages(3)
    whole = cache.insert([1, 2, 3], table)
    cache.lock(whole.node)
    part = cache.insert([1, 2], table[:2])
    assert part.cached_len == 2 and whole.node.parent is part.node
    assert part.node.lock_ref == 1
    cache.check_integrity(held_pages=[])
    with pytest.raises(ValueError):
        cache.free_pages(table[:1])
    with pytest.raises(ValueError, match="another request"):
        cache.insert([5, 6], [table[2], cache.alloc_pages(1)[0]])
    cache.unlock(whole.node)
    with pytest.raises(IntegrityError):
        cache.unlock(whole.node)


# --- block hash --------------------------------------------------------------------------------


def test_block_hash_matches_and_dedups_like_the_tree() -> None:
    cache = BlockHashCache(16, page_size=2)
    a = cache.insert([1, 2, 3, 4, 5, 6], cache.alloc_pages(3))
    b = cache.insert([1, 2, 3, 4, 7, 8], cache.alloc_pages(3))
    assert b.cached_len == 4 and b.pages[:2] == a.pages[:2]
    assert cache.stats().duplicate_pages_freed == 2
    match = cache.match_prefix([1, 2, 3, 4, 7, 9])
    assert (match.cached_len, match.pages) == (4, a.pages[:2])
    cache.check_integrity(held_pages=[])
    json.dumps(cache.to_dict())
    assert "block hash cache" in cache.dump()


def test_block_hash_evicts_tail_blocks_first() -> None:
    cache = BlockHashCache(4, page_size=1)
    chain = cache.insert([1, 2, 3], cache.alloc_pages(3))
    cache.lock(chain.node)
    cache.unlock(chain.node)  # released tail first: block [3] is the oldest now
    assert cache.alloc_pages(2) is not None  # 1 free + evicts one block: the tail
    assert cache.match_prefix([1, 2, 3]).cached_len == 2
    cache.evict(1)  # the match touched [1 2] tail first: block [2] is the oldest
    assert cache.match_prefix([1, 2]).cached_len == 1
    cache.check_integrity()


def test_block_hash_refuses_to_lock_an_evicted_chain() -> None:
    cache = BlockHashCache(4, page_size=1)
    cache.insert([1, 2], cache.alloc_pages(2))
    match = cache.match_prefix([1, 2])
    cache.flush()
    with pytest.raises(ValueError, match="evicted"):
        cache.lock(match.node)


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_and_classes() -> None:
    assert sorted(CACHE_REGISTRY) == ["block_hash", "naive", "radix"]
    assert cache_class("radix") is RadixCache and cache_class("naive") is NaiveCache
    assert isinstance(create_cache("radix", 8, 4, policy="lfu"), RadixCache)
    with pytest.raises(ValueError, match="unknown prefix cache"):
        cache_class("lru")
    with pytest.raises(ValueError, match="unknown eviction policy"):
        RadixCache(8, policy="fifo")


def test_the_library_imports_no_torch() -> None:
    code = (
        "import sys, radixserve.radix_cache, radixserve.radix_cache.block_hash_cache;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the shared base: every cache's counters and page flags are checked ------------------------


def shared_state(name: str) -> tuple[PrefixCache, list[int]]:
    """Two inserted prefixes (one locked) and two private pages; integrity holds."""
    cache = create_cache(name, 16, page_size=2)
    first = cache.insert([1, 2, 3, 4], cache.alloc_pages(2))
    cache.lock(first.node)
    cache.insert([5, 6], cache.alloc_pages(1))
    held = cache.alloc_pages(2)
    assert held is not None
    cache.check_integrity(held_pages=held)
    return cache, held


CORRUPTIONS = {
    "node count": lambda cache: setattr(cache, "num_nodes", cache.num_nodes + 1),
    "cached page count": lambda cache: setattr(cache, "_cached_pages", cache._cached_pages - 1),
    "locked page count": lambda cache: setattr(cache, "_locked_pages", cache._locked_pages + 1),
    "owned-page flags": lambda cache: cache.allocator.state.bytes.__setitem__(
        cache.allocator.cached_pages()[0], HELD
    ),
    "flagged free": lambda cache: setattr(cache.allocator, "_top", cache.allocator._top - 1),
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
@pytest.mark.parametrize("name", sorted(CACHE_REGISTRY))
def test_every_cache_checks_the_shared_bookkeeping(name: str, what: str) -> None:
    cache, held = shared_state(name)
    CORRUPTIONS[what](cache)
    with pytest.raises(IntegrityError, match=what):
        cache.check_integrity(held_pages=held)


@pytest.mark.parametrize("name", sorted(CACHE_REGISTRY))
def test_every_cache_checks_the_page_partition(name: str) -> None:
    cache, held = shared_state(name)
    with pytest.raises(IntegrityError, match="lost 1"):
        cache.check_integrity(held_pages=held[:1])
    with pytest.raises(IntegrityError, match="both"):
        cache.check_integrity(held_pages=held + [held[0]])


@pytest.mark.parametrize("name", sorted(CACHE_REGISTRY))
def test_every_cache_shares_allocation_and_eviction(name: str) -> None:
    cache, held = shared_state(name)
    assert cache.num_cached_pages == 3 and cache.num_locked_pages == 2
    assert cache.num_free_pages == 11 and cache.num_available_pages == 12
    cached_page = [page for page in range(16) if cache.allocator.is_cached(page)][:1]
    with pytest.raises(ValueError, match="owns: unlock it instead"):
        cache.free_pages(cached_page)
    assert cache.alloc_pages(13) is None and cache.stats().evicted_pages == 0  # nothing evicted
    assert cache.alloc_pages(12) is not None  # evicts the unlocked prefix
    stats = cache.stats()
    assert (stats.evicted_pages, stats.cached_tokens, stats.locked_tokens) == (1, 4, 4)
    assert cache.flush() == 0  # the rest is locked
    assert cache.summary().startswith("page_size=2, 16 pages (0 free, 2 cached, 2 locked)")
    json.dumps(cache.to_dict())
    assert cache.to_dict()["kind"] == name


@pytest.mark.parametrize("name", ["naive", "block_hash"])
def test_only_the_radix_cache_takes_another_eviction_policy(name: str) -> None:
    assert create_cache(name, 8, 2, policy="lru").stats().num_pages == 8
    with pytest.raises(ValueError, match=f"the {name} cache evicts least recently used first"):
        create_cache(name, 8, 2, policy="lfu")
    assert cache_class(name).shares_prefixes == (name != "naive")
