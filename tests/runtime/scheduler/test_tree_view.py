"""The scheduler's answer to GetTreeReq: a page of the radix tree as wire structs (encoded and
decoded as they travel), the counters, nothing but counters for a cache that is not a tree,
and each node's tier once the cache has a host tier."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from radixserve.radix_cache import NaiveCache, RadixCache
from radixserve.radix_cache.inspection import NodeRow
from radixserve.runtime.scheduler.tree_view import node_view, tree_out
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


@dataclass
class TieredNode:  # the fields node_view reads, plus a host copy
    pages: list[int]
    host_pages: list[int] | None
    key: list[int] = field(default_factory=lambda: [7, 8])
    node_id: int = 5
    lock_ref: int = 0
    last_access: int = 1
    hits: int = 0
    children: dict = field(default_factory=dict)
    is_root: bool = False


def test_tiers_of_a_cache_with_a_host_tier() -> None:
    def tier(pages: list[int], host: list[int] | None, tiered: bool = True) -> str | None:
        row = NodeRow(TieredNode(pages, host), 0, 1)  # type: ignore[arg-type]
        return node_view(row, 0, tiered).tier

    assert tier([3], None) == "device"
    assert tier([3], [9]) == "device+host"
    assert tier([], [9]) == "host"
    assert tier([3], [9], tiered=False) is None
