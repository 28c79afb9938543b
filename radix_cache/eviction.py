"""Eviction policies over the evictable leaves, kept in a heap with lazy deletion.

A leaf is pushed whenever it becomes evictable (inserted, unlocked to zero, its last child
evicted) or its order key changes (touched); stale entries are skipped when popped, so no
eviction ever walks the tree. A policy only decides the order key: smallest is evicted first.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from radixserve.radix_cache.node import TreeNode

OrderKey = tuple[int, ...]

EVICTION_POLICIES: dict[str, Callable[[TreeNode], OrderKey]] = {
    "lru": lambda n: (n.last_access,),
    "lfu": lambda n: (n.hits, n.last_access),
    # Program-aware pinning: a lower priority goes first, LRU among equals.
    "priority": lambda n: (n.priority, n.last_access),
}


class EvictableHeap:
    def __init__(
        self,
        policy: str,
        is_evictable: Callable[[TreeNode], bool],
        num_nodes: Callable[[], int],
    ) -> None:
        if policy not in EVICTION_POLICIES:
            raise ValueError(
                f"unknown eviction policy {policy!r}; choose one of {sorted(EVICTION_POLICIES)}"
            )
        self.order_key = EVICTION_POLICIES[policy]
        self.is_evictable = is_evictable
        self.num_nodes = num_nodes
        self._heap: list[tuple[OrderKey, int, TreeNode]] = []

    def push(self, node: TreeNode) -> None:
        if self.is_evictable(node):
            heapq.heappush(self._heap, (self.order_key(node), node.node_id, node))
            # Lazy deletion lets stale entries pile up under heavy touching; a rebuild once the
            # heap outgrows the tree severalfold keeps it O(nodes) at O(1) amortized cost.
            if len(self._heap) > 4 * self.num_nodes() + 1024:
                self.compact()

    def _is_current(self, entry: tuple[OrderKey, int, TreeNode]) -> bool:
        key, _, node = entry
        return self.is_evictable(node) and key == self.order_key(node)

    def pop(self) -> TreeNode | None:
        while self._heap:
            entry = heapq.heappop(self._heap)
            if self._is_current(entry):
                return entry[2]
        return None

    def compact(self) -> None:
        live = {id(e[2]): e for e in self._heap if self._is_current(e)}
        self._heap = list(live.values())
        heapq.heapify(self._heap)

    def live_nodes(self) -> Iterator[TreeNode]:
        return (e[2] for e in self._heap if self._is_current(e))
