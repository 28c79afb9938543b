"""The radix tree of paged KV blocks.

Only whole pages enter the tree; a request's partial tail page stays private to it. Locked nodes
(reference count > 0, set on a node and all its ancestors) are never evicted; unlocked leaves are
evicted in policy order (LRU by default) from an incrementally maintained heap, and a parent that
becomes an unlocked leaf becomes evictable in turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from radixserve.radix_cache.allocator import PageAllocator
from radixserve.radix_cache.base import (
    CacheStats,
    InsertResult,
    IntegrityError,
    MatchResult,
    PrefixCache,
)
from radixserve.radix_cache.eviction import EvictableHeap
from radixserve.radix_cache.inspection import check_tree_integrity, tree_dump, tree_to_dict
from radixserve.radix_cache.node import TreeNode, aligned_common_prefix, child_key


class RadixCache(PrefixCache):
    def __init__(self, num_pages: int, page_size: int = 1, policy: str = "lru") -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.num_pages = num_pages
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages)
        self._clock = 0
        self.root = TreeNode([], [], None, 0)
        self.root.lock_ref = 1  # the root is never evicted
        self.num_nodes = 1
        self._cached_pages = 0
        self._locked_pages = 0
        self.hit_tokens = 0
        self.queried_tokens = 0
        self.evicted_pages = 0
        self.heap = EvictableHeap(policy, self._is_evictable, lambda: self.num_nodes)

    # --- queries -------------------------------------------------------------------------------

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _is_evictable(self, node: TreeNode) -> bool:
        return node.lock_ref == 0 and not node.children and node.parent is not None

    def _walk(self, tokens: Sequence[int], count_hits: bool) -> tuple[TreeNode, int, list[int]]:
        """Follows tokens down the tree, splitting a partly matched edge; returns the last node,
        the matched length and the matched pages."""
        ps = self.page_size
        node, matched, pages = self.root, 0, []
        now = self._tick()
        while matched < len(tokens):
            child = node.children.get(child_key(tokens, matched, ps))
            if child is None:
                break
            length = aligned_common_prefix(child.key, tokens, matched, ps)
            if length == 0:
                break
            if length < len(child.key):
                child = self._split(child, length)
            child.last_access = now
            if count_hits:
                child.hits += 1
            self.heap.push(child)
            pages.extend(child.pages)
            matched += length
            node = child
        return node, matched, pages

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        aligned = len(token_ids) // self.page_size * self.page_size
        tokens = token_ids[:aligned] if isinstance(token_ids, list) else list(token_ids[:aligned])
        node, matched, pages = self._walk(tokens, count_hits=True)
        self.hit_tokens += matched
        self.queried_tokens += len(token_ids)
        return MatchResult(pages, matched, node)

    def _split(self, child: TreeNode, length: int) -> TreeNode:
        """Cuts child's edge after `length` tokens; returns the new upper node."""
        ps = self.page_size
        parent = child.parent
        assert parent is not None
        upper = TreeNode(child.key[:length], child.pages[: length // ps], parent, child.last_access)
        upper.lock_ref = child.lock_ref  # every lock on child's path also covers the upper half
        upper.hits, upper.priority = child.hits, child.priority
        parent.children[child_key(child.key, 0, ps)] = upper
        child.key = child.key[length:]
        child.pages = child.pages[length // ps :]
        child.parent = upper
        upper.children[child_key(child.key, 0, ps)] = child
        self.num_nodes += 1
        return upper

    # --- insert --------------------------------------------------------------------------------

    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        ps = self.page_size
        if len(token_ids) % ps or len(pages) != len(token_ids) // ps:
            raise ValueError(
                f"insert needs whole pages: {len(token_ids)} tokens, {len(pages)} pages, "
                f"page_size {ps}"
            )
        tokens = list(token_ids)
        node, matched, tree_pages = self._walk(tokens, count_hits=False)
        duplicates = [
            mine
            for mine, theirs in zip(pages[: matched // ps], tree_pages, strict=True)
            if mine != theirs
        ]
        if duplicates:
            self.allocator.free(duplicates)
        cached_len = matched
        if matched < len(tokens):
            new_pages = list(pages[matched // ps :])
            leaf = TreeNode(tokens[matched:], new_pages, node, self._tick())
            node.children[child_key(leaf.key, 0, ps)] = leaf
            self.num_nodes += 1
            self._cached_pages += len(new_pages)
            self.heap.push(leaf)
            tree_pages.extend(new_pages)
            node = leaf
        return InsertResult(cached_len, tree_pages, node)

    # --- locks ---------------------------------------------------------------------------------

    def lock(self, node: TreeNode) -> None:
        while node is not None and node is not self.root:
            if node.lock_ref == 0:
                self._locked_pages += len(node.pages)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: TreeNode) -> None:
        while node is not None and node is not self.root:
            if node.lock_ref <= 0:
                raise IntegrityError(f"unlock of {node!r} whose lock count is {node.lock_ref}")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._locked_pages -= len(node.pages)
                self.heap.push(node)
            node = node.parent  # type: ignore[assignment]

    def set_priority(self, node: TreeNode, priority: int) -> None:
        """Priority for the "priority" policy (higher is kept longer), on the node's path."""
        while node is not None and node is not self.root:
            node.priority = priority
            self.heap.push(node)
            node = node.parent  # type: ignore[assignment]

    # --- pages ---------------------------------------------------------------------------------

    def alloc_pages(self, num_pages: int) -> list[int] | None:
        short = num_pages - self.allocator.num_free
        if short > 0:
            if short > self.num_evictable_pages:
                return None
            self.evict(short)
        return self.allocator.alloc(num_pages)

    def free_pages(self, pages: Iterable[int]) -> None:
        self.allocator.free(pages)

    def evict(self, num_pages: int) -> int:
        freed = 0
        while freed < num_pages:
            leaf = self.heap.pop()
            if leaf is None:
                break
            parent = leaf.parent
            assert parent is not None
            del parent.children[child_key(leaf.key, 0, self.page_size)]
            leaf.parent = None
            self.allocator.free(leaf.pages)
            freed += len(leaf.pages)
            self._cached_pages -= len(leaf.pages)
            self.num_nodes -= 1
            self.heap.push(parent)  # it may have just become an evictable leaf
        self.evicted_pages += freed
        return freed

    def flush(self) -> int:
        return self.evict(self.num_evictable_pages)

    # --- accounting ----------------------------------------------------------------------------

    @property
    def num_free_pages(self) -> int:
        return self.allocator.num_free

    @property
    def num_cached_pages(self) -> int:
        return self._cached_pages

    @property
    def num_locked_pages(self) -> int:
        return self._locked_pages

    def stats(self) -> CacheStats:
        ps = self.page_size
        return CacheStats(
            num_pages=self.num_pages,
            free_pages=self.num_free_pages,
            cached_tokens=self._cached_pages * ps,
            evictable_tokens=self.num_evictable_pages * ps,
            locked_tokens=self._locked_pages * ps,
            hit_tokens=self.hit_tokens,
            queried_tokens=self.queried_tokens,
            evicted_pages=self.evicted_pages,
            num_nodes=self.num_nodes,
        )

    def check_integrity(self, held_pages: Iterable[int] | None = None) -> None:
        check_tree_integrity(self, held_pages)

    def to_dict(self) -> dict[str, Any]:
        return tree_to_dict(self.root, self.page_size)

    def dump(self) -> str:
        return tree_dump(self.root, self.page_size)
