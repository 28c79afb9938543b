"""Looking inside a radix tree: the integrity check, a text dump and a JSON-able dict."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from radixserve.radix_cache.base import IntegrityError
from radixserve.radix_cache.node import TreeNode, child_key

if TYPE_CHECKING:
    from radixserve.radix_cache.radix_cache import RadixCache


def _nodes(root: TreeNode) -> Iterator[TreeNode]:
    stack = list(root.children.values())
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children.values())


def _fail(message: str) -> None:
    raise IntegrityError(message)


def check_tree_integrity(cache: RadixCache, held_pages: Iterable[int] | None) -> None:
    ps = cache.page_size
    tree_pages: list[int] = []
    locked_pages = 0
    count = 1
    for node in _nodes(cache.root):
        count += 1
        parent = node.parent
        if parent is None or parent.children.get(child_key(node.key, 0, ps)) is not node:
            _fail(f"{node!r} is not under its parent's child key")
        if not node.key or len(node.key) != len(node.pages) * ps:
            _fail(f"{node!r}: {len(node.key)} tokens but {len(node.pages)} pages of {ps}")
        if node.lock_ref < 0:
            _fail(f"{node!r} has a negative lock count")
        if parent is not cache.root and parent.lock_ref < node.lock_ref:
            _fail(f"{node!r} holds more locks than its parent {parent!r}")
        if node.lock_ref > 0:
            locked_pages += len(node.pages)
        tree_pages.extend(node.pages)
    if count != cache.num_nodes:
        _fail(f"node count {cache.num_nodes} but the tree has {count}")
    if len(tree_pages) != cache.num_cached_pages:
        _fail(f"cached page count {cache.num_cached_pages} but the tree holds {len(tree_pages)}")
    if locked_pages != cache.num_locked_pages:
        _fail(f"locked page count {cache.num_locked_pages} but the tree has {locked_pages} locked")
    _check_partition(cache, tree_pages, held_pages)
    _check_heap(cache)


def _check_partition(
    cache: RadixCache, tree_pages: list[int], held_pages: Iterable[int] | None
) -> None:
    free = cache.allocator.free_list()
    places = {"free": free, "cached": tree_pages}
    if held_pages is not None:
        places["held"] = list(held_pages)
    seen: dict[int, str] = {}
    for place, pages in places.items():
        for page in pages:
            if not 0 <= page < cache.num_pages:
                _fail(f"page {page} ({place}) is outside the pool of {cache.num_pages}")
            if page in seen:
                _fail(f"page {page} is both {seen[page]} and {place}")
            seen[page] = place
    total = len(seen)
    if held_pages is not None and total != cache.num_pages:
        missing = sorted(set(range(cache.num_pages)) - set(seen))[:8]
        _fail(f"free + cached + held = {total} of {cache.num_pages} pages; lost e.g. {missing}")
    if total > cache.num_pages:
        _fail(f"{total} pages accounted for in a pool of {cache.num_pages}")


def _check_heap(cache: RadixCache) -> None:
    live = {id(n) for n in cache.heap.live_nodes()}
    for node in _nodes(cache.root):
        if node.lock_ref == 0 and not node.children and id(node) not in live:
            _fail(f"evictable leaf {node!r} is missing from the eviction heap")


def tree_to_dict(root: TreeNode, page_size: int, token_preview: int = 8) -> dict[str, Any]:
    def visit(node: TreeNode) -> dict[str, Any]:
        return {
            "id": node.node_id,
            "tokens": len(node.key),
            "key_head": node.key[:token_preview],
            "pages": list(node.pages),
            "lock_ref": node.lock_ref,
            "last_access": node.last_access,
            "hits": node.hits,
            "priority": node.priority,
            "children": [visit(c) for c in node.children.values()],
        }

    return {"page_size": page_size, "root": visit(root)}


def tree_dump(root: TreeNode, page_size: int, token_preview: int = 6) -> str:
    lines = [f"radix tree (page_size={page_size})"]

    def visit(node: TreeNode, depth: int) -> None:
        for child in sorted(node.children.values(), key=lambda c: c.key[:1]):
            head = " ".join(map(str, child.key[:token_preview]))
            more = " ..." if len(child.key) > token_preview else ""
            lines.append(
                f"{'  ' * depth}- [{head}{more}] {len(child.key)} tok, pages {child.pages[:4]}"
                f"{'...' if len(child.pages) > 4 else ''}, lock={child.lock_ref}"
            )
            visit(child, depth + 1)

    visit(root, 1)
    return "\n".join(lines)
