"""Looking inside a radix tree: the integrity check, a text dump and a JSON-able dict.

Every walk here is iterative: a long multi-turn conversation makes a deep chain of nodes, and
recursion would hit Python's limit long before memory does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .base import CacheStats, IntegrityError, hit_rate
from .eviction import is_evictable
from .node import TreeNode, child_key

if TYPE_CHECKING:
    from .radix_cache import RadixCache

MAX_INDENT = 16


def iter_nodes(root: TreeNode) -> Iterator[TreeNode]:
    """Every node below the root, parents before children (depth-first)."""
    stack = list(root.children.values())
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children.values())


def _fail(message: str) -> None:
    raise IntegrityError(message)


def check_tree_integrity(cache: RadixCache, held_pages: Iterable[int] | None) -> None:
    ps, root = cache.page_size, cache.root
    if root.key or root.pages or root.parent is not None or root.lock_ref != 0:
        _fail(f"the root must be empty, parentless and unlocked: {root!r}")
    tree_pages: list[int] = []
    seen_ids = {root.node_id}
    evictable: set[int] = set()
    num_nodes, locked_pages = 1, 0
    for node in iter_nodes(root):
        _check_node(node, ps, seen_ids)
        num_nodes += 1
        tree_pages.extend(node.pages)
        if node.lock_ref > 0:
            locked_pages += len(node.pages)
        if is_evictable(node):
            evictable.add(node.node_id)
    for name, counted, recounted in (
        ("node count", cache.num_nodes, num_nodes),
        ("cached page count", cache.num_cached_pages, len(tree_pages)),
        ("locked page count", cache.num_locked_pages, locked_pages),
    ):
        if counted != recounted:
            _fail(f"{name} is {counted} but the tree has {recounted}")
    flagged = {page for page, flag in enumerate(cache._in_tree) if flag}
    if flagged != set(tree_pages):
        _fail(f"in-tree flags disagree with the tree on pages {sorted(flagged ^ set(tree_pages))}")
    check_partition(cache.num_pages, cache.allocator.free_list(), tree_pages, held_pages)
    problem = cache.allocator.check() or cache._heap.check_heap_order()
    if problem:
        _fail(problem)
    live = {node.node_id for node in cache._heap.live_nodes()}
    if live != evictable:
        _fail(
            f"eviction heap lists nodes {sorted(live - evictable)} that are not evictable and "
            f"misses evictable nodes {sorted(evictable - live)}"
        )


def _check_node(node: TreeNode, ps: int, seen_ids: set[int]) -> None:
    parent = node.parent
    if node.node_id in seen_ids:
        _fail(f"{node!r} is reached twice: the tree has a cycle or a shared node")
    seen_ids.add(node.node_id)
    if parent is None or parent.children.get(child_key(node.key, 0, ps)) is not node:
        _fail(f"{node!r} is not under its parent's child key")
    if not node.key or len(node.key) != len(node.pages) * ps:
        _fail(f"{node!r}: {len(node.key)} tokens but {len(node.pages)} pages of {ps}")
    if node.lock_ref < 0:
        _fail(f"{node!r} has a negative lock count")
    # A node's count is the locks ending at it plus those of its children.
    below = sum(child.lock_ref for child in node.children.values())
    if node.lock_ref < below:
        _fail(f"{node!r} holds fewer locks than its children together ({below})")
    newest_child = max((child.last_access for child in node.children.values()), default=0)
    if node.last_access < newest_child:
        _fail(f"{node!r} was accessed before one of its children (t={newest_child})")


def check_partition(
    num_pages: int,
    free: list[int],
    cached: list[int],
    held_pages: Iterable[int] | None,
) -> None:
    """Free, cached and held pages are in range and pairwise disjoint; with `held_pages` given
    they are exactly the pool."""
    places = {"free": free, "cached": cached}
    if held_pages is not None:
        places["held"] = list(held_pages)
    seen: dict[int, str] = {}
    for place, pages in places.items():
        for page in pages:
            if not 0 <= page < num_pages:
                _fail(f"page {page} ({place}) is outside the pool of {num_pages}")
            if page in seen:
                _fail(f"page {page} is both {seen[page]} and {place}")
            seen[page] = place
    if held_pages is not None and len(seen) != num_pages:
        missing = sorted(set(range(num_pages)) - set(seen))
        _fail(
            f"free + cached + held = {len(seen)} of {num_pages} pages; "
            f"lost {len(missing)}, e.g. {missing[:8]}"
        )


def tree_stats(cache: RadixCache) -> CacheStats:
    ps = cache.page_size
    return CacheStats(
        num_pages=cache.num_pages,
        page_size=ps,
        free_pages=cache.num_free_pages,
        cached_tokens=cache.num_cached_pages * ps,
        evictable_tokens=cache.num_evictable_pages * ps,
        locked_tokens=cache.num_locked_pages * ps,
        hit_tokens=cache.hit_tokens,
        total_match_tokens=cache.total_match_tokens,
        hit_rate=hit_rate(cache.hit_tokens, cache.total_match_tokens),
        evicted_pages=cache.evicted_pages,
        num_nodes=cache.num_nodes,
        num_matches=cache.num_matches,
        num_inserts=cache.num_inserts,
        duplicate_pages_freed=cache.duplicate_pages_freed,
    )


def _preview(values: list[int], limit: int) -> str:
    head = " ".join(map(str, values[:limit]))
    return head + (" ..." if len(values) > limit else "")


def tree_dump(cache: RadixCache, token_preview: int = 8, max_nodes: int = 2000) -> str:
    r"""One line per node, children sorted by their first tokens:

    radix tree: page_size=2, 16 pages (10 free, 6 cached, 2 locked), 4 nodes, clock 3
    root
    +-- #1 [1 2 3 4] 4 tok, pages [0 1], lock 1, t 3
    |   +-- #3 [5 6] 2 tok, pages [4], lock 0, t 2
    |   `-- #2 [7 8] 2 tok, pages [2], lock 1, t 3
    `-- ...
    """
    lines = [
        f"radix tree: page_size={cache.page_size}, {cache.num_pages} pages "
        f"({cache.num_free_pages} free, {cache.num_cached_pages} cached, "
        f"{cache.num_locked_pages} locked), {cache.num_nodes} nodes, clock {cache._clock}",
        "root",
    ]
    stack: list[tuple[TreeNode, str, bool, int]] = [
        (c, "", i == 0, 1) for i, c in enumerate(_sorted_children(cache.root, reverse=True))
    ]
    while stack and len(lines) < max_nodes + 2:
        node, indent, last, depth = stack.pop()
        # Indentation stops growing at MAX_INDENT levels (a long chat is a deep chain), and
        # deeper lines say their depth instead.
        deep = f"(depth {depth}) " if depth > MAX_INDENT else ""
        lines.append(
            f"{indent}{'`-- ' if last else '+-- '}{deep}#{node.node_id} "
            f"[{_preview(node.key, token_preview)}] {len(node.key)} tok, "
            f"pages [{_preview(node.pages, token_preview)}], lock {node.lock_ref}, "
            f"t {node.last_access}"
            + (f", hits {node.hits}" if node.hits else "")
            + (f", priority {node.priority}" if node.priority else "")
        )
        if depth < MAX_INDENT:
            indent += "    " if last else "|   "
        children = _sorted_children(node, reverse=True)
        stack.extend((c, indent, i == 0, depth + 1) for i, c in enumerate(children))
    if stack:
        lines.append(f"... ({cache.num_nodes - max_nodes - 1} more nodes)")
    return "\n".join(lines)


def _sorted_children(node: TreeNode, reverse: bool) -> list[TreeNode]:
    # Reversed order goes onto a stack, so the smallest is popped (printed) first.
    return sorted(node.children.values(), key=lambda c: c.key[:8], reverse=reverse)


def tree_to_dict(cache: RadixCache, token_preview: int = 16) -> dict[str, Any]:
    """{"kind", "page_size", "num_pages", "policy", "stats", "nodes"}: the nodes as a flat list,
    parents before children, each with its id and its parent's id. Flat because a long chat is
    a chain thousands of nodes deep, which nested JSON encoders (recursive) cannot serialise."""
    nodes = []
    stack = [(cache.root, None)]
    while stack:
        node, parent_id = stack.pop()
        nodes.append(
            {
                "id": node.node_id,
                "parent": parent_id,
                "num_tokens": len(node.key),
                "key_head": node.key[:token_preview],
                "pages": list(node.pages),
                "lock_ref": node.lock_ref,
                "last_access": node.last_access,
                "hits": node.hits,
                "priority": node.priority,
                "num_children": len(node.children),
            }
        )
        children = _sorted_children(node, reverse=True)
        stack.extend((child, node.node_id) for child in children)
    return {
        "kind": "radix",
        "page_size": cache.page_size,
        "num_pages": cache.num_pages,
        "policy": cache.policy.name or type(cache.policy).__name__,
        "stats": asdict(cache.stats()),
        "nodes": nodes,
    }
