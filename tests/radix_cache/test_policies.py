"""Eviction policies (LRU, LFU, priority, a custom one), the heap's upkeep, the key comparison."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.radix_cache import EVICTION_POLICIES, EvictionPolicy, RadixCache
from radixserve.radix_cache.node import TreeNode, aligned_common_prefix
from tests.radix_cache.priority import PriorityPolicy, set_priority


def fill(cache: RadixCache, *sequences: list[int]) -> list[TreeNode]:
    nodes = []
    for tokens in sequences:
        pages = cache.alloc_pages(len(tokens) // cache.page_size)
        assert pages is not None
        nodes.append(cache.insert(tokens, pages).node)
    return nodes


def surviving(cache: RadixCache, *sequences: list[int]) -> list[bool]:
    # Checked through the tree without match_prefix, which would count as an access.
    return [cache.root.children.get(tokens[0]) is not None for tokens in sequences]


def test_policy_registry_names() -> None:
    # Priority eviction has no flag or caller in the runtime: it lives in tests/ (priority.py).
    assert sorted(EVICTION_POLICIES) == ["lfu", "lru"]
    assert [type(RadixCache(4, policy=name).policy).__name__ for name in ("lru", "lfu")] == [
        "LRUPolicy",
        "LFUPolicy",
    ]


def test_lfu_evicts_the_least_matched_leaf_first() -> None:
    cache = RadixCache(8, page_size=1, policy="lfu")
    a, b, c = [1, 1], [2, 2], [3, 3]
    fill(cache, a, b, c)
    for _ in range(3):
        cache.match_prefix(a)
    cache.match_prefix(c)  # b: 0 hits, c: 1 hit (most recent), a: 3 hits
    cache.evict(1)
    assert surviving(cache, a, b, c) == [True, False, True]
    cache.evict(1)
    assert surviving(cache, a, b, c) == [True, False, False]
    cache.check_integrity(held_pages=[])


def test_priority_policy_keeps_pinned_paths_longest() -> None:
    cache = RadixCache(16, page_size=1, policy=PriorityPolicy())
    pinned, a, b = [1, 1], [2, 2], [3, 3]
    nodes = fill(cache, pinned, a, b)
    set_priority(cache, nodes[0], 10)  # the oldest: LRU alone would evict it first
    cache.evict(2)
    assert surviving(cache, pinned, a, b) == [True, False, True]
    cache.evict(2)
    assert surviving(cache, pinned, a, b) == [True, False, False]
    cache.check_integrity(held_pages=[])


def test_priority_raises_ancestors_and_survives_splits() -> None:
    cache = RadixCache(16, page_size=1, policy=PriorityPolicy())
    (deep,) = fill(cache, [1, 2, 3, 4])
    set_priority(cache, deep, 5)
    cache.match_prefix([1, 2, 9])  # splits [1 2 | 3 4]: the upper half keeps priority 5
    upper = deep.parent
    assert upper is not None and upper.priority == deep.priority == 5
    fill(cache, [1, 2, 7, 7])  # a new child at the default priority 0
    set_priority(cache, upper, 1)  # lowering the node itself is allowed
    assert upper.priority == 1 and deep.priority == 5
    cache.evict(1)
    assert [c.key for c in upper.children.values()] == [[3, 4]]
    cache.check_integrity(held_pages=[])


class MostRecentFirst(EvictionPolicy):
    name = "mru"

    def order_key(self, node: TreeNode) -> tuple[int, ...]:
        return (-node.last_access,)


def test_a_custom_policy_plugs_in() -> None:
    cache = RadixCache(8, page_size=1, policy=MostRecentFirst())
    a, b = [1, 1], [2, 2]
    fill(cache, a, b)
    cache.match_prefix(a)
    cache.evict(1)
    assert surviving(cache, a, b) == [False, True]
    assert cache.to_dict()["policy"] == "mru"


def test_heap_garbage_stays_bounded_under_heavy_touching() -> None:
    cache = RadixCache(64, page_size=1)
    fill(cache, *([t, t] for t in range(1, 9)))
    for i in range(20_000):
        cache.match_prefix([1 + i % 8, 1 + i % 8])
    assert len(cache._heap) <= 4 * cache.num_nodes + 1024 + 1
    cache.check_integrity(held_pages=[])
    assert cache.evict(16) == 16 and cache.num_nodes == 1


def brute_aligned_prefix(edge: list[int], tokens: list[int], ps: int) -> int:
    n = 0
    while n < min(len(edge), len(tokens)) and edge[n] == tokens[n]:
        n += 1
    return n - n % ps


@settings(deadline=None)  # a GC pause on a busy machine is not a failure
@given(
    ps=st.sampled_from([1, 2, 4, 16]),
    edge_pages=st.integers(1, 40),
    query_pages=st.integers(0, 40),
    flips=st.lists(st.integers(0, 700), max_size=3),
    offset=st.integers(0, 2),
)
def test_aligned_common_prefix_matches_a_token_loop(
    ps: int, edge_pages: int, query_pages: int, flips: list[int], offset: int
) -> None:
    edge = [t % 3 for t in range(edge_pages * ps)]
    query = [t % 3 for t in range(query_pages * ps)]
    for flip in flips:
        if flip < len(query):
            query[flip] = 7
    padded = [9] * (offset * ps) + query + [8] * 5  # a start offset and an unaligned tail
    start, end = offset * ps, offset * ps + len(query)
    assert aligned_common_prefix(edge, padded, start, end, ps) == brute_aligned_prefix(
        edge, query, ps
    )
