"""`tree_page`: pages of the radix tree's nodes, parents first, covering the tree exactly once,
checked against the whole-tree list `tree_nodes_dict` on random trees."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.radix_cache import RadixCache
from radixserve.radix_cache.inspection import tree_nodes_dict, tree_page


def random_tree(seed: int, num_seqs: int, page_size: int) -> RadixCache:
    """Sequences over a 3-token alphabet (so they share prefixes and split edges), some
    matched (hits) and one locked."""
    rng = random.Random(seed)
    cache = RadixCache(4096, page_size=page_size)
    seqs = []
    for _ in range(num_seqs):
        pages = rng.randint(1, 6)
        tokens = [rng.randint(0, 2) for _ in range(pages * page_size)]
        cached = cache.match_prefix(tokens)
        new = cache.alloc_pages(pages - cached.cached_len // page_size)
        assert new is not None
        cache.insert(tokens, cached.pages + new)
        seqs.append(tokens)
    if seqs:
        cache.lock(cache.match_prefix(seqs[0]).node)
    cache.check_integrity()
    return cache


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    num_seqs=st.integers(0, 30),
    page_size=st.sampled_from([1, 2, 4]),
    limit=st.integers(1, 7),
)
def test_pages_cover_the_tree_once_parents_first(
    seed: int, num_seqs: int, page_size: int, limit: int
) -> None:
    cache = random_tree(seed, num_seqs, page_size)
    rows = []
    offset = 0
    while True:
        page = tree_page(cache.root, offset, limit)
        assert len(page) <= limit
        rows += page
        offset += len(page)
        if len(page) < limit:
            break
    assert len(rows) == cache.num_nodes
    reference = {n["id"]: n for n in tree_nodes_dict(cache.root)}
    assert {r.node.node_id for r in rows} == set(reference)
    depth = {}
    for row in rows:
        node = row.node
        assert row.parent_id == reference[node.node_id]["parent"]
        if row.parent_id is None:
            assert node is cache.root and row.depth == 0
        else:
            assert row.parent_id in depth, "a parent comes before its children"
            assert row.depth == depth[row.parent_id] + 1
        depth[node.node_id] = row.depth
    assert tree_page(cache.root, offset, limit) == []  # past the end


def test_children_in_insertion_order_and_hits_counted() -> None:
    cache = RadixCache(64, page_size=1)
    for tokens in ([5, 1], [5, 2], [7], [5, 2, 9]):
        match = cache.match_prefix(tokens)
        new = cache.alloc_pages(len(tokens) - match.cached_len)
        assert new is not None
        cache.insert(tokens, match.pages + new)
    ids = [(r.node.key, r.depth) for r in tree_page(cache.root, 0, 10)]
    assert ids == [([], 0), ([5], 1), ([1], 2), ([2], 2), ([9], 3), ([7], 1)]
    hits = {tuple(r.node.key): r.node.hits for r in tree_page(cache.root, 0, 10)}
    assert hits[(5,)] == 2 and hits[(2,)] == 1  # the lookups of [5, 2] and [5, 2, 9]
    assert [r.node.key for r in tree_page(cache.root, 2, 2)] == [[1], [2]]


def test_negative_offset_or_limit_is_refused() -> None:
    cache = RadixCache(8)
    with pytest.raises(ValueError, match="offset and limit"):
        tree_page(cache.root, -1, 5)
