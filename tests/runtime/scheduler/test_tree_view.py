"""The scheduler's answer to GetTreeReq: a page of the radix tree as wire structs (encoded and
decoded as they travel), the counters, nothing but counters for a cache that is not a tree,
and each node's tier once the cache has a host tier."""

from __future__ import annotations

import msgspec

from radixserve.radix_cache import NaiveCache, RadixCache
from radixserve.radix_cache.hicache import HierarchicalRadixCache
from radixserve.runtime.scheduler.tree_view import tree_out
from radixserve.runtime.wire.messages import GetTreeReq, SchedulerOutput, TreeOut


def filled_cache() -> RadixCache:
    cache = RadixCache(32, page_size=2)
    for tokens in ([1, 2, 3, 4], [1, 2, 5, 6]):
        match = cache.match_prefix(tokens)
        new = cache.alloc_pages(2 - match.cached_len // 2)
        assert new is not None
        cache.insert(tokens, match.pages + new)
    cache.lock(cache.match_prefix([1, 2, 3, 4]).node)
    return cache


def roundtrip(out: TreeOut) -> TreeOut:
    decoded = msgspec.msgpack.Decoder(SchedulerOutput).decode(msgspec.msgpack.encode(out))
    assert isinstance(decoded, TreeOut)
    return decoded


def test_a_page_of_the_tree_with_counters() -> None:
    cache = filled_cache()
    out = roundtrip(tree_out(cache, GetTreeReq(offset=0, limit=10, token_preview=1), 1, 2, 3))
    assert (out.kind, out.policy, out.page_size, out.total_nodes) == ("radix", "lru", 2, 4)
    assert (out.running, out.waiting, out.dp_rank, out.clock) == (1, 2, 3, cache._clock)
    assert [(n.depth, n.key_head, n.lock_ref, n.tier) for n in out.nodes] == [
        (0, [], 0, None),
        (1, [1], 1, None),
        (2, [3], 1, None),
        (2, [5], 0, None),
    ]
    shared = out.nodes[1]
    assert shared.hits == 2 and shared.num_children == 2 and shared.num_tokens == 2
    assert out.stats.locked_tokens == 4 and out.stats.num_nodes == 4
    second = tree_out(cache, GetTreeReq(offset=2, limit=1), 0, 0)
    assert [n.id for n in second.nodes] == [out.nodes[2].id] and second.offset == 2


def test_a_cache_that_is_not_a_tree_answers_its_counters() -> None:
    cache = NaiveCache(8, page_size=2)
    out = roundtrip(tree_out(cache, GetTreeReq(limit=5), 0, 0))
    assert out.kind == cache.kind and out.nodes == [] and out.stats.num_pages == 8


def test_tiers_of_a_cache_with_a_host_tier() -> None:
    cache = HierarchicalRadixCache(8, page_size=1, host_pages=16)
    pages = cache.alloc_pages(3)
    assert pages is not None
    cache.insert([1, 2, 3], pages)
    match = cache.match_prefix([1, 2, 9, 9])
    pages = cache.alloc_pages(2)
    assert pages is not None
    cache.insert([1, 2, 9, 9], match.pages + pages)
    assert cache.evict(2) == 3  # both leaves move to the host tier
    out = roundtrip(tree_out(cache, GetTreeReq(limit=10, token_preview=2), 0, 0))
    assert out.kind == "hiradix"
    assert [(n.key_head, n.tier, n.num_tokens, n.num_pages) for n in out.nodes] == [
        ([], None, 0, 0),
        ([1, 2], "device", 2, 2),
        ([3], "host", 1, 0),
        ([9, 9], "host", 2, 0),
    ]
    plain = tree_out(filled_cache(), GetTreeReq(limit=10), 0, 0)
    assert {n.tier for n in plain.nodes} == {None}  # one tier: no tier names
