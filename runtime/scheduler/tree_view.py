"""The scheduler's answer to `GetTreeReq`: one page of its prefix cache's nodes, as wire structs.

The walk is bounded by the request's offset + limit (the server caps the limit), so answering
costs the scheduler loop a few milliseconds at most, between two steps. A cache that is not a
tree (block hash, naive) answers its counters and no nodes.
"""

from __future__ import annotations

from ...radix_cache import PrefixCache, RadixCache
from ...radix_cache.inspection import NodeRow, tree_page
from ..wire.messages import CacheNodeView, GetTreeReq, TreeOut


def tree_out(
    cache: PrefixCache, request: GetTreeReq, running: int, waiting: int, dp_rank: int = 0
) -> TreeOut:
    nodes: list[CacheNodeView] = []
    policy, clock = "lru", 0
    if isinstance(cache, RadixCache):
        policy = cache.policy.name or type(cache.policy).__name__
        clock = cache._clock
        rows = tree_page(cache.root, max(request.offset, 0), max(request.limit, 0))
        tiered = getattr(cache, "host", None) is not None  # a host tier under the device pool
        nodes = [node_view(row, request.token_preview, tiered) for row in rows]
    return TreeOut(
        kind=cache.kind,
        policy=policy,
        page_size=cache.page_size,
        num_pages=cache.num_pages,
        clock=clock,
        total_nodes=cache.num_nodes,
        offset=request.offset,
        nodes=nodes,
        stats=cache.stats(),
        running=running,
        waiting=waiting,
        dp_rank=dp_rank,
    )


def node_view(row: NodeRow, token_preview: int, tiered: bool = False) -> CacheNodeView:
    """`tier`, for a cache with a host tier, says where the node's KV lives: "device", "host"
    or "device+host" (a device node with a host copy); None for a one-tier cache."""
    node = row.node
    tier = None
    if tiered and not node.is_root:
        on_host = getattr(node, "host_pages", None) is not None
        tier = ("device+host" if on_host else "device") if len(node.pages) else "host"
    return CacheNodeView(
        id=node.node_id,
        parent=row.parent_id,
        depth=row.depth,
        num_tokens=len(node.key),
        num_pages=len(node.pages),
        lock_ref=node.lock_ref,
        last_access=node.last_access,
        hits=node.hits,
        num_children=len(node.children),
        key_head=node.key[: max(token_preview, 0)],
        tier=tier,
    )
