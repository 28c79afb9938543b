"""Looking inside a radix tree: the integrity check's walk, a text dump, a JSON-able list and
one page of nodes at a time (for the server's /debug/radix_tree).

Every walk here is iterative: a long multi-turn conversation makes a deep chain of nodes, and
recursion would hit Python's limit long before memory does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import IntegrityError, Recount
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


def recount_tree(cache: RadixCache) -> Recount:
    """Checks every node and the eviction heap (raising IntegrityError); recounts the tree for
    the base's comparison with its counters, flags and free list."""
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
    problem = cache._heap.check_heap_order()
    if problem:
        _fail(problem)
    live = {node.node_id for node in cache._heap.live_nodes()}
    if live != evictable:
        _fail(
            f"eviction heap lists nodes {sorted(live - evictable)} that are not evictable and "
            f"misses evictable nodes {sorted(evictable - live)}"
        )
    return Recount(tree_pages, locked_pages, num_nodes)


def _check_node(node: TreeNode, ps: int, seen_ids: set[int]) -> None:
    check_place(node, ps, seen_ids)
    if not node.key or len(node.key) != len(node.pages) * ps:
        _fail(f"{node!r}: {len(node.key)} tokens but {len(node.pages)} pages of {ps}")
    check_bookkeeping(node)


def check_place(node: TreeNode, ps: int, seen_ids: set[int]) -> None:
    """The node is reached once and sits under its parent's key for it (every tree's check)."""
    parent = node.parent
    if node.node_id in seen_ids:
        _fail(f"{node!r} is reached twice: the tree has a cycle or a shared node")
    seen_ids.add(node.node_id)
    if parent is None or parent.children.get(child_key(node.key, 0, ps)) is not node:
        _fail(f"{node!r} is not under its parent's child key")


def check_bookkeeping(node: TreeNode) -> None:
    """The node's page array, lock count and access time agree with its pages and children
    (every tree's check)."""
    if node.page_array is not None and node.page_array.tolist() != node.pages:
        _fail(f"{node!r}: its page array differs from its page list")
    if node.lock_ref < 0:
        _fail(f"{node!r} has a negative lock count")
    # A node's count is the locks ending at it plus those of its children.
    below = sum(child.lock_ref for child in node.children.values())
    if node.lock_ref < below:
        _fail(f"{node!r} holds fewer locks than its children together ({below})")
    newest_child = max((child.last_access for child in node.children.values()), default=0)
    if node.last_access < newest_child:
        _fail(f"{node!r} was accessed before one of its children (t={newest_child})")


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
    lines = [f"radix tree: {cache.summary()}, clock {cache._clock}", "root"]
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


def tree_nodes_dict(root: TreeNode, token_preview: int = 16) -> list[dict[str, Any]]:
    """The nodes as a flat list, parents before children, each with its id and its parent's id.
    Flat because a long chat is a chain thousands of nodes deep, which nested JSON encoders
    (recursive) cannot serialise."""
    nodes = []
    stack: list[tuple[TreeNode, int | None]] = [(root, None)]
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
    return nodes


@dataclass(slots=True, frozen=True)
class NodeRow:
    """A node met by `tree_page`, with what the walk knows about its place."""

    node: TreeNode
    parent_id: int | None  # None for the root
    depth: int  # edges from the root


def tree_page(root: TreeNode, offset: int, limit: int) -> list[NodeRow]:
    """Nodes `offset` .. `offset + limit - 1` of a depth-first walk that starts at the root and
    visits children in insertion order, so parents come before their children and consecutive
    pages of an unchanged tree cover it exactly once. Costs O(offset + limit) steps: the walk
    skips the first `offset` nodes without building rows for them."""
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, got {offset} and {limit}")
    rows: list[NodeRow] = []
    stack: list[tuple[TreeNode, int | None, int]] = [(root, None, 0)]
    index = 0
    while stack and len(rows) < limit:
        node, parent_id, depth = stack.pop()
        if index >= offset:
            rows.append(NodeRow(node, parent_id, depth))
        index += 1
        # Reversed onto the stack, so the first inserted child is visited first.
        stack.extend((c, node.node_id, depth + 1) for c in reversed(node.children.values()))
    return rows
