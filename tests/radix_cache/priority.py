"""Priority eviction: program-aware pinning, kept next to its tests.

Nothing in the runtime can set a priority yet (no request carries one and no flag selects this
policy), so it is not among the package's EVICTION_POLICIES. It plugs in as a policy object,
`RadixCache(n, policy=PriorityPolicy())`, keyed on the node field `priority` that the radix cache
keeps across splits.
"""

from __future__ import annotations

from radixserve.radix_cache import EvictionPolicy, RadixCache
from radixserve.radix_cache.node import TreeNode


class PriorityPolicy(EvictionPolicy):
    """Lowest priority first (set with `set_priority`), least recently used among equals."""

    name = "priority"

    def order_key(self, node: TreeNode) -> tuple[int, ...]:
        return (node.priority, node.last_access)


def set_priority(cache: RadixCache, node: TreeNode, priority: int) -> None:
    """Sets the node's priority (lower is evicted first) and raises each ancestor's to at least
    `priority`, so a pinned path is kept as a whole: a child never outranks the ancestors it
    needs. New nodes start at 0. Each changed node is pushed onto the eviction heap again, since
    its order key changed behind the cache's back."""
    node.priority = priority
    cache._heap.push(node, cache.num_nodes)
    ancestor = node.parent
    while ancestor is not None and ancestor is not cache.root:
        if ancestor.priority < priority:
            ancestor.priority = priority
            cache._heap.push(ancestor, cache.num_nodes)
        ancestor = ancestor.parent
