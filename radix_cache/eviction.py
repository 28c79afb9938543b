"""Eviction policies, and the heap of evictable leaves they order.

A node is evictable when it is an unlocked leaf below the root. The heap is maintained
incrementally with lazy deletion: a node is pushed whenever it may have become evictable (inserted,
unlocked to zero, its last child evicted) or its order key changed (touched, reprioritised), and
an entry is skipped when popped if its node is no longer evictable or its key is stale. So no
eviction ever walks the tree, and each step costs O(log heap).

A policy only decides the order key of a node; the smallest key is evicted first.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from ..utils.registry import Registry
from .node import TreeNode

# A policy's keys are all ints or all tuples of ints: the heap compares keys of one policy only.
# A plain int (LRU's) compares and builds faster than a one-item tuple on every heap step.
OrderKey = int | tuple[int, ...]


class EvictionPolicy(ABC):
    """Orders evictable leaves. Keys must depend only on node fields the cache updates through
    its own methods (last_access, hits), or the heap would go stale silently; a key on a field
    set from outside (`priority`) needs the node pushed again after each change."""

    name: str = ""

    @abstractmethod
    def order_key(self, node: TreeNode) -> OrderKey:
        """Smallest is evicted first."""


class LRUPolicy(EvictionPolicy):
    """Least recently matched or inserted first."""

    name = "lru"

    def order_key(self, node: TreeNode) -> OrderKey:
        return node.last_access


class LFUPolicy(EvictionPolicy):
    """Fewest matches first, least recently used among equals."""

    name = "lfu"

    def order_key(self, node: TreeNode) -> OrderKey:
        return (node.hits, node.last_access)


# The `--radix-eviction-policy` choices. A policy object of one's own (an EvictionPolicy) can be
# passed to RadixCache directly; tests/radix_cache/priority.py pins paths that way.
EVICTION_POLICIES: Registry[EvictionPolicy] = Registry(
    "eviction policy",
    {"lru": ".eviction:LRUPolicy", "lfu": ".eviction:LFUPolicy"},
    package=__package__,
    base=EvictionPolicy,
)


def make_policy(policy: str | EvictionPolicy) -> EvictionPolicy:
    if isinstance(policy, EvictionPolicy):
        return policy
    return EVICTION_POLICIES.load(policy)()


def is_evictable(node: TreeNode) -> bool:
    # A detached (evicted) node has no parent; the root has none either.
    return node.lock_ref == 0 and not node.children and node.parent is not None


class EvictableHeap:
    """Entries are (order key, node_id, node); node_id breaks ties, so nodes never compare."""

    __slots__ = ("policy", "_heap", "_slack")

    def __init__(self, policy: EvictionPolicy) -> None:
        self.policy = policy
        self._heap: list[tuple[OrderKey, int, TreeNode]] = []
        self._slack = 1024

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, node: TreeNode, num_nodes: int) -> None:
        """Records `node` if it is evictable now; `num_nodes` bounds the heap's garbage."""
        if node.lock_ref == 0 and not node.children and node.parent is not None:
            heapq.heappush(self._heap, (self.policy.order_key(node), node.node_id, node))
            # Lazy deletion lets stale entries pile up under heavy touching; rebuilding once the
            # heap outgrows the tree severalfold keeps it O(nodes) at O(1) amortized cost.
            if len(self._heap) > 4 * num_nodes + self._slack:
                self.compact()

    def _is_current(self, entry: tuple[OrderKey, int, TreeNode]) -> bool:
        key, _, node = entry
        return is_evictable(node) and key == self.policy.order_key(node)

    def pop(self) -> TreeNode | None:
        """The evictable node with the smallest key, removed; None when there is none."""
        heap, key_of, heappop = self._heap, self.policy.order_key, heapq.heappop
        while heap:
            key, _, node = heappop(heap)
            # `_is_current` inlined: eviction pops stale entries at every call.
            if (
                node.lock_ref == 0
                and not node.children
                and node.parent is not None
                and key == key_of(node)
            ):
                return node
        return None

    def compact(self) -> None:
        """Drops stale and duplicate entries."""
        live = {e[2].node_id: e for e in self._heap if self._is_current(e)}
        self._heap = list(live.values())
        heapq.heapify(self._heap)

    def live_nodes(self) -> Iterator[TreeNode]:
        """Nodes with a current entry (each once): for the integrity check."""
        seen: set[int] = set()
        for entry in self._heap:
            node = entry[2]
            if node.node_id not in seen and self._is_current(entry):
                seen.add(node.node_id)
                yield node

    def check_heap_order(self) -> str | None:
        """A description of the first violation of the heap property, or None."""
        heap = self._heap
        for i in range(1, len(heap)):
            if heap[i] < heap[(i - 1) // 2]:
                return f"heap entry {i} is smaller than its parent"
        return None


class TierHeap(EvictableHeap):
    """An evictable heap whose notion of evictable is a predicate of the cache's (the
    hierarchical cache keeps one heap per tier, each with its own rule)."""

    __slots__ = ("evictable",)

    def __init__(self, policy: EvictionPolicy, evictable: Callable[[TreeNode], bool]) -> None:
        super().__init__(policy)
        self.evictable = evictable

    def push(self, node: TreeNode, num_nodes: int) -> None:
        if self.evictable(node):
            heapq.heappush(self._heap, (self.policy.order_key(node), node.node_id, node))
            if len(self._heap) > 4 * num_nodes + self._slack:
                self.compact()

    def _is_current(self, entry: tuple[OrderKey, int, TreeNode]) -> bool:
        key, _, node = entry
        return self.evictable(node) and key == self.policy.order_key(node)

    def pop(self) -> TreeNode | None:
        heap = self._heap
        while heap:
            entry = heapq.heappop(heap)
            if self._is_current(entry):
                return entry[2]
        return None
