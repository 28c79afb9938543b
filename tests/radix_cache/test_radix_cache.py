"""Unit tests of the radix tree: splits, LRU order, locked paths under pressure, out of pages."""

from __future__ import annotations

import pytest

from radixserve.radix_cache import IntegrityError, RadixCache


def page(token: int, page_size: int) -> list[int]:
    return [token] * page_size


def seq(*tokens: int, page_size: int = 4) -> list[int]:
    """One page per token: seq(1, 2) at page size 4 is [1 1 1 1 2 2 2 2]."""
    return [t for token in tokens for t in page(token, page_size)]


def cached(cache: RadixCache, tokens: list[int], lock: bool = False):
    """Allocates and inserts `tokens` (whole pages) as a request that computed them would."""
    pages = cache.alloc_pages(len(tokens) // cache.page_size)
    assert pages is not None
    result = cache.insert(tokens, pages)
    if lock:
        cache.lock(result.node)
    cache.check_integrity(held_pages=[])
    return result


# --- match and split ---------------------------------------------------------------------------


def test_empty_cache_matches_nothing_and_returns_the_root() -> None:
    cache = RadixCache(8, page_size=4)
    result = cache.match_prefix(seq(1, 2))
    assert (result.pages, result.cached_len, result.node) == ([], 0, cache.root)
    cache.lock(result.node)  # the root: a no-op
    cache.unlock(result.node)
    cache.check_integrity(held_pages=[])


def test_partial_tail_page_never_matches_or_enters_the_tree() -> None:
    cache = RadixCache(8, page_size=4)
    inserted = cached(cache, seq(1, 2))
    tokens = seq(1, 2) + [3, 3]  # two whole pages and half a page
    assert cache.match_prefix(tokens).pages == inserted.pages
    with pytest.raises(ValueError, match="whole pages"):
        cache.insert(tokens, [5, 6, 7])


def test_match_splits_an_edge_at_the_page_of_the_mismatch() -> None:
    cache = RadixCache(16, page_size=4)
    whole = cached(cache, seq(1, 2, 3), lock=True)
    # The mismatch is in the third token of the third page: the match stops after two pages.
    query = seq(1, 2) + [3, 3, 9, 3]
    match = cache.match_prefix(query)
    assert match.cached_len == 8
    assert match.pages == whole.pages[:2]
    assert match.node is not whole.node and match.node.key == seq(1, 2)
    # The locked handle is the lower half, still ending where it did, and still locked.
    assert whole.node.parent is match.node and whole.node.key == seq(3)
    assert match.node.lock_ref == whole.node.lock_ref == 1
    assert cache.num_nodes == 3
    cache.check_integrity(held_pages=[])


def test_page_size_one_splits_at_the_exact_token() -> None:
    cache = RadixCache(16, page_size=1)
    cached(cache, [1, 2, 3, 4, 5])
    match = cache.match_prefix([1, 2, 3, 9])
    assert match.cached_len == 3 and match.node.key == [1, 2, 3]
    assert sorted(c.key[0] for c in match.node.children.values()) == [4]
    cached(cache, [1, 2, 3, 9, 9])
    assert sorted(match.node.children) == [4, 9]
    cache.check_integrity(held_pages=[])


def test_insert_splits_and_adds_a_sibling() -> None:
    cache = RadixCache(16, page_size=4)
    first = cached(cache, seq(1, 2, 3))
    second = cached(cache, seq(1, 2, 4, 5))
    assert second.cached_len == 8
    assert second.pages[:2] == first.pages[:2]
    assert cache.num_nodes == 4  # root, [1 2], [3], [4 5]
    assert cache.match_prefix(seq(1, 2, 4, 5, 6)).cached_len == 16


def test_non_list_token_sequences_match_like_lists() -> None:
    np = pytest.importorskip("numpy")
    cache = RadixCache(8, page_size=2)
    cached(cache, [1, 2, 3, 4])
    for tokens in ([1, 2, 3, 4], (1, 2, 3, 4), np.array([1, 2, 3, 4]), range(1, 5)):
        assert cache.match_prefix(tokens).cached_len == 4


# --- insert ------------------------------------------------------------------------------------


def test_second_insert_of_a_prefix_frees_the_duplicate_pages() -> None:
    cache = RadixCache(16, page_size=4)
    a_pages, b_pages = cache.alloc_pages(3), cache.alloc_pages(3)
    a = cache.insert(seq(1, 2, 3), a_pages)
    assert (a.cached_len, a.pages) == (0, a_pages)
    b = cache.insert(seq(1, 2, 3), b_pages)
    assert (b.cached_len, b.pages, b.node) == (12, a_pages, a.node)
    assert cache.num_free_pages == 16 - 3 and all(cache.allocator.is_free(p) for p in b_pages)
    cache.check_integrity(held_pages=[])


def test_insert_leaves_the_trees_own_pages_alone() -> None:
    cache = RadixCache(16, page_size=4)
    a = cached(cache, seq(1, 2))
    extra = cache.alloc_pages(1)
    b = cache.insert(seq(1, 2, 3), a.pages + extra)
    assert (b.cached_len, b.pages) == (8, a.pages + extra)
    assert cache.stats().duplicate_pages_freed == 0
    cache.check_integrity(held_pages=[])


@pytest.mark.parametrize(
    ("tokens", "pages", "message"),
    [
        ([1, 1, 1], [0], "whole pages"),
        ([1, 1, 1, 1], [0, 1], "whole pages"),
        ([1, 1, 1, 1], [99], "outside the pool"),
        ([1, 1, 1, 1] * 2, [0, 0], "same page twice"),
        ([1, 1, 1, 1], [5], "free list"),
    ],
)
def test_insert_rejects_bad_pages(tokens: list[int], pages: list[int], message: str) -> None:
    cache = RadixCache(8, page_size=4)
    assert cache.alloc_pages(2) == [0, 1]
    with pytest.raises(ValueError, match=message):
        cache.insert(tokens, pages)
    cache.check_integrity(held_pages=[0, 1])


def test_insert_rejects_a_page_the_tree_owns_elsewhere() -> None:
    cache = RadixCache(8, page_size=4)
    a = cached(cache, seq(1))
    with pytest.raises(ValueError, match="tree owns"):
        cache.insert(seq(2), a.pages)
    cache.check_integrity(held_pages=[])


# --- eviction order ----------------------------------------------------------------------------


def test_lru_evicts_the_least_recently_used_leaf_first() -> None:
    cache = RadixCache(6, page_size=4)
    a, b, c = (cached(cache, seq(t, 9)) for t in (1, 2, 3))
    cache.match_prefix(seq(1, 9))  # a is now the most recent
    assert cache.evict(1) == 2 and cache.match_prefix(seq(2, 9)).cached_len == 0
    assert cache.evict(1) == 2 and cache.match_prefix(seq(3, 9)).cached_len == 0
    assert cache.match_prefix(seq(1, 9)).pages == a.pages
    assert cache.stats().evicted_pages == 4
    del b, c


def test_a_parent_becomes_evictable_when_its_last_child_goes() -> None:
    cache = RadixCache(8, page_size=1)
    cached(cache, [1, 2, 3])
    cached(cache, [1, 2, 3, 4, 5])
    cached(cache, [7])
    cache.match_prefix([7])  # [7] is newer than the whole [1 2 3 4 5] path
    assert cache.evict(1) == 2  # the leaf [4 5]
    assert cache.evict(1) == 3  # then its parent [1 2 3], now a leaf, before [7]
    assert cache.match_prefix([7]).cached_len == 1
    cache.check_integrity(held_pages=[])


def test_evict_frees_whole_leaves_and_reports_the_count() -> None:
    cache = RadixCache(8, page_size=2)
    cached(cache, [1] * 6)  # one leaf of 3 pages
    assert cache.evict(0) == 0
    assert cache.evict(1) == 3
    assert cache.evict(5) == 0  # nothing left
    cache.check_integrity(held_pages=[])


def test_flush_evicts_everything_unlocked() -> None:
    cache = RadixCache(16, page_size=2)
    kept = cached(cache, [1, 1, 2, 2], lock=True)
    cached(cache, [1, 1, 3, 3])
    cached(cache, [4, 4])
    assert cache.flush() == 2
    assert cache.num_cached_pages == cache.num_locked_pages == 2
    assert cache.match_prefix([1, 1, 2, 2]).pages == kept.pages
    cache.unlock(kept.node)
    assert cache.flush() == 2 and cache.num_free_pages == 16
    cache.check_integrity(held_pages=[])


# --- locks under pressure and out of pages -----------------------------------------------------


def test_locked_paths_survive_eviction_pressure() -> None:
    cache = RadixCache(8, page_size=2)
    locked = cached(cache, [1, 1, 2, 2, 3, 3], lock=True)  # 3 pages, locked
    cached(cache, [1, 1, 4, 4])  # shares the locked [1 1] page; its own page is evictable
    cached(cache, [5, 5, 6, 6])
    assert (cache.num_free_pages, cache.num_evictable_pages, cache.num_locked_pages) == (2, 3, 3)
    held = cache.alloc_pages(5)  # 2 free + all 3 evictable
    assert held is not None and len(held) == 5
    assert cache.match_prefix([1, 1, 2, 2, 3, 3]).pages == locked.pages
    assert cache.num_cached_pages == cache.num_locked_pages == 3
    cache.check_integrity(held_pages=held)


def test_out_of_pages_returns_none_and_evicts_nothing() -> None:
    cache = RadixCache(6, page_size=2)
    cached(cache, [1, 1, 2, 2], lock=True)
    cached(cache, [3, 3])
    before = cache.dump()
    assert cache.alloc_pages(5) is None  # 3 free + 1 evictable
    assert cache.dump() == before and cache.stats().evicted_pages == 0
    pages = cache.alloc_pages(4)
    assert pages is not None and cache.stats().evicted_pages == 1
    assert cache.alloc_pages(1) is None
    assert cache.alloc_pages(0) == []
    with pytest.raises(ValueError):
        cache.alloc_pages(-1)
    cache.check_integrity(held_pages=pages)


def test_lock_counts_nest_and_unlock_below_zero_raises() -> None:
    cache = RadixCache(8, page_size=1)
    a = cached(cache, [1, 2])
    cache.lock(a.node)
    cache.lock(a.node)
    cache.unlock(a.node)
    assert a.node.lock_ref == 1 and cache.num_locked_pages == 2
    cache.unlock(a.node)
    with pytest.raises(IntegrityError, match="lock count"):
        cache.unlock(a.node)
    cache.check_integrity(held_pages=[])


def test_lock_of_an_evicted_node_raises() -> None:
    cache = RadixCache(4, page_size=1)
    match_node = cached(cache, [1, 2]).node
    cache.flush()
    with pytest.raises(ValueError, match="evicted"):
        cache.lock(match_node)


def test_free_pages_rejects_tree_pages_double_frees_and_strangers() -> None:
    cache = RadixCache(8, page_size=1)
    a = cached(cache, [1, 2])
    private = cache.alloc_pages(2)
    with pytest.raises(ValueError, match="tree owns"):
        cache.free_pages(a.pages)
    cache.free_pages(private[:1])
    with pytest.raises(ValueError, match="already free"):
        cache.free_pages(private)
    with pytest.raises(ValueError):
        cache.free_pages([8])
    cache.check_integrity(held_pages=private[1:])


def test_stats_count_hits_and_queries() -> None:
    cache = RadixCache(16, page_size=4)
    cached(cache, seq(1, 2))
    cache.match_prefix(seq(1, 2, 3) + [7])  # 13 tokens asked, 8 hit
    cache.match_prefix(seq(5))  # 4 asked, 0 hit
    stats = cache.stats()
    assert (stats.hit_tokens, stats.total_match_tokens) == (8, 17)
    assert stats.hit_rate == pytest.approx(8 / 17)
    assert (stats.cached_tokens, stats.evictable_tokens, stats.locked_tokens) == (8, 8, 0)
    assert (stats.num_nodes, stats.num_matches, stats.num_inserts) == (2, 2, 1)
