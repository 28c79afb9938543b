"""The hierarchical cache's integrity check: the radix tree's rules, per tier.

every node     on the device (pages), on the host (host_pages) or both; each list covers
               its whole key; a device node's parent is on the device (or is the root)
locks          never negative, a node's count at least its children's together
loads          a loading node is locked (its load holds a lock) and its load is in flight
heaps          the device heap lists exactly the device-evictable nodes, the host heap
               exactly the host-evictable ones
pages          device pages: free + cached + held == the device pool (the base's check);
               host pages: free + cached == the host pool, each cached by one node only
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .allocator import partition_problem
from .base import IntegrityError, Recount
from .inspection import check_bookkeeping, check_place, iter_nodes
from .node import TreeNode

if TYPE_CHECKING:
    from .hicache import HierarchicalRadixCache


def _fail(message: str) -> None:
    raise IntegrityError(message)


def recount_tiers(cache: HierarchicalRadixCache) -> Recount:
    ps, root = cache.page_size, cache.root
    if root.key or root.pages or root.parent is not None or root.lock_ref != 0:
        _fail(f"the root must be empty, parentless and unlocked: {root!r}")
    device_pages: list[int] = []
    seen = {root.node_id}
    device_evictable: set[int] = set()
    host_evictable: set[int] = set()
    num_nodes, locked = 1, 0
    in_flight = {id(t) for t in cache._loads}
    for node in iter_nodes(root):
        _check_node(node, ps, seen, in_flight)
        num_nodes += 1
        device_pages.extend(node.pages)
        if node.lock_ref > 0:
            locked += len(node.pages)
        if cache._device_evictable(node):
            device_evictable.add(node.node_id)
        if cache._host_evictable(node):
            host_evictable.add(node.node_id)
    for name, heap, expected in (
        ("device", cache._heap, device_evictable),
        ("host", cache._host_heap, host_evictable),
    ):
        problem = heap.check_heap_order()
        if problem:
            _fail(f"{name} heap: {problem}")
        live = {node.node_id for node in heap.live_nodes()}
        if live != expected:
            _fail(
                f"{name} eviction heap lists {sorted(live - expected)} that are not evictable "
                f"and misses evictable nodes {sorted(expected - live)}"
            )
    return Recount(device_pages, locked, num_nodes)


def _check_node(node: TreeNode, ps: int, seen: set[int], in_flight: set[int]) -> None:
    check_place(node, ps, seen)
    parent = node.parent
    if not node.key or len(node.key) % ps:
        _fail(f"{node!r}: an edge of {len(node.key)} tokens at page size {ps}")
    count = len(node.key) // ps
    if not node.pages and node.host_pages is None:
        _fail(f"{node!r} is on neither tier")
    if node.pages and len(node.pages) != count:
        _fail(f"{node!r}: {len(node.key)} tokens but {len(node.pages)} device pages of {ps}")
    if node.host_pages is not None and len(node.host_pages) != count:
        _fail(f"{node!r}: {len(node.key)} tokens but {len(node.host_pages)} host pages of {ps}")
    if node.pages and parent is not None and parent.parent is not None and not parent.pages:
        _fail(f"{node!r} is on the device but its parent is not")
    check_bookkeeping(node)
    if node.loading is not None:
        if id(node.loading) not in in_flight or not node.pages or node.lock_ref == 0:
            _fail(f"{node!r} is loading without a load in flight, device pages and a lock")


def check_host_tier(cache: HierarchicalRadixCache) -> None:
    host_pages: list[int] = []
    host_locked = 0
    for node in iter_nodes(cache.root):
        if node.host_pages is not None:
            host_pages.extend(node.host_pages)
            if node.lock_ref > 0:
                host_locked += len(node.host_pages)
    if len(host_pages) != cache._host_cached:
        _fail(f"host cached page count is {cache._host_cached} but the tree has {len(host_pages)}")
    if host_locked != cache._host_locked:
        _fail(f"host locked page count is {cache._host_locked} but the tree has {host_locked}")
    flagged = set(cache.host.cached_pages())
    if flagged != set(host_pages):
        _fail(f"host page flags disagree with the tree on {sorted(flagged ^ set(host_pages))}")
    problem = cache.host.problem() or partition_problem(
        cache.host.num_pages, cache.host.free_list(), host_pages, []
    )
    if problem:
        _fail(f"host tier: {problem}")
