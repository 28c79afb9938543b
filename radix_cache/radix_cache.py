"""The radix tree of paged KV blocks.

Only whole pages enter the tree; a request's partial tail page stays private to it. Locked nodes
(reference count > 0, counted on a node and all its ancestors) are never evicted. Unlocked leaves
are evicted in policy order (LRU by default) from an incrementally maintained heap, and a parent
that becomes an unlocked leaf becomes evictable in turn.

Time is a counter that ticks once per match_prefix or insert; every node the call passes through
gets that tick, so a node's last_access is never older than any of its descendants'. With LRU
this makes leaf-by-leaf eviction free pages oldest first across the whole tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .base import (
    InsertResult,
    IntegrityError,
    MatchResult,
    PrefixCache,
    Recount,
)
from .eviction import EvictableHeap, EvictionPolicy, make_policy
from .inspection import recount_tree, tree_dump, tree_nodes_dict
from .node import (
    TreeNode,
    aligned_common_prefix,
    as_token_list,
    child_key,
    new_root,
)
from .page_flags import CHECK_LOOP_MAX, PageIds, as_ids, is_bulk


class RadixCache(PrefixCache):
    """A compressed radix tree over token ids whose values are KV page ids, plus the free list."""

    kind: ClassVar[str] = "radix"
    holder: ClassVar[str] = "tree"

    def __init__(
        self, num_pages: int, page_size: int = 1, policy: str | EvictionPolicy = "lru"
    ) -> None:
        super().__init__(num_pages, page_size)
        self.policy = make_policy(policy)
        self.root = new_root()
        self._heap = EvictableHeap(self.policy)
        self._clock = 0

    # --- lookups -------------------------------------------------------------------------------

    def _walk(
        self, tokens: list[int], end: int, now: int, count_hit: bool
    ) -> tuple[TreeNode, int, list[int]]:
        """Follows tokens[:end] (page-aligned) down the tree, splitting a partly matched edge and
        stamping every node passed with `now`; returns the last node, the matched length and the
        matched pages."""
        ps = self.page_size
        node, pos, pages = self.root, 0, []
        while pos < end:
            child = node.children.get(tokens[pos] if ps == 1 else tuple(tokens[pos : pos + ps]))
            if child is None:
                break
            # At least the first page matches: it is the child's dict key.
            length = aligned_common_prefix(child.key, tokens, pos, end, ps)
            partial = length < len(child.key)
            if partial:
                child = self._split(child, length)
            child.last_access = now
            if count_hit:
                child.hits += 1
            if not child.children:
                self._heap.push(child, self.num_nodes)  # its order key changed
            pages += child.pages
            pos += length
            node = child
            if partial:
                break  # the next page differs, or the query ends here
        return node, pos, pages

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        tokens = as_token_list(token_ids)
        end = len(tokens) - len(tokens) % self.page_size
        self._clock += 1
        node, matched, pages = self._walk(tokens, end, self._clock, count_hit=True)
        self.hit_tokens += matched
        self.total_match_tokens += len(tokens)
        self.num_matches += 1
        return MatchResult(pages, matched, node)

    def _split(self, child: TreeNode, length: int) -> TreeNode:
        r"""Cuts child's edge after `length` tokens (a page multiple); returns the new upper node.

            parent --[k0 .. k_len | k_len .. k_end]--> child
        =>  parent --[k0 .. k_len]--> upper --[k_len .. k_end]--> child   (same object)

        The lower half stays the same object, so a handle a request has locked still ends where
        it did; every lock through child also runs through upper, hence the copied lock_ref.
        """
        ps = self.page_size
        parent = child.parent
        assert parent is not None, "split of a detached node"
        upper = TreeNode(
            key=child.key[:length],
            pages=child.pages[: length // ps],
            parent=parent,
            last_access=child.last_access,
            lock_ref=child.lock_ref,
            hits=child.hits,
            priority=child.priority,
        )
        parent.children[child_key(upper.key, 0, ps)] = upper  # the same first page as child's
        child.key = child.key[length:]
        child.pages = child.pages[length // ps :]
        if child.page_array is not None:
            upper.page_array = child.page_array[: length // ps]
            child.page_array = child.page_array[length // ps :]
        child.parent = upper
        upper.children[child_key(child.key, 0, ps)] = child
        self.num_nodes += 1
        return upper

    # --- insert --------------------------------------------------------------------------------

    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        ps = self.page_size
        tokens = as_token_list(token_ids)
        self._check_insert_shape(len(tokens), len(pages))
        self._clock += 1
        # The walk may split an edge before the pages are checked below; a split alone changes
        # nothing a caller can observe, so a rejected insert leaves an equivalent tree.
        node, matched, tree_pages = self._walk(tokens, len(tokens), self._clock, count_hit=False)
        num_matched = matched // ps
        mine = pages[:num_matched]
        mine = mine if type(mine) is list else list(mine)
        duplicates = (
            []  # the usual case, the caller's table already holds the tree's pages: one C compare
            if mine == tree_pages
            else [m for m, ours in zip(mine, tree_pages, strict=True) if m != ours]
        )
        new_pages = list(pages[num_matched:])
        # Only pages the caller hands over need checking; the rest are the tree's own. Without
        # duplicates (the usual case) `_own` checks the new pages and takes them in one pass.
        if duplicates:
            self._check_handed_over(duplicates + new_pages)
            self._free_duplicates(duplicates)
        if new_pages:
            # A long edge keeps its pages as an array too (one bulk release when evicted).
            array = as_ids(new_pages) if is_bulk(new_pages) else None
            self._own(array if array is not None and len(array) >= CHECK_LOOP_MAX else new_pages)
            leaf = TreeNode(tokens[matched:], new_pages, node, last_access=self._clock)
            leaf.page_array = array
            node.children[child_key(leaf.key, 0, ps)] = leaf
            self.num_nodes += 1
            self._heap.push(leaf, self.num_nodes)
            tree_pages += new_pages
            node = leaf
        self.num_inserts += 1
        return InsertResult(matched, tree_pages, node)

    # --- locks ---------------------------------------------------------------------------------

    def lock(self, node: TreeNode) -> None:
        if node.parent is None:
            if node is self.root:
                return
            raise ValueError(f"lock of {node!r}, which was evicted: match again")
        root = self.root
        while node is not root:
            if node.lock_ref == 0:
                self._count_locked(node, 1)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: TreeNode) -> None:
        if node.parent is None and node is not self.root:
            raise IntegrityError(f"unlock of {node!r}, which is not in the tree")
        if node is not self.root and node.lock_ref <= 0:
            # Ancestors hold at least as many locks, so checking the first node is enough.
            raise IntegrityError(f"unlock of {node!r} whose lock count is {node.lock_ref}")
        root = self.root
        while node is not root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._count_locked(node, -1)
                self._push(node)
            node = node.parent  # type: ignore[assignment]

    def _count_locked(self, node: TreeNode, sign: int) -> None:
        """A node's pages join (+1) or leave (-1) the locked count as its first lock is taken
        or its last released; a cache with more tiers counts their pages too."""
        self._locked_pages += sign * len(node.pages)

    def _push(self, node: TreeNode) -> None:
        """An unlocked node becomes an eviction candidate (each tier's heap, where several)."""
        self._heap.push(node, self.num_nodes)

    # --- eviction ------------------------------------------------------------------------------

    def _evict_next(self) -> PageIds:
        leaf = self._heap.pop()
        if leaf is None:
            return []
        parent = leaf.parent
        assert parent is not None
        ps = self.page_size
        del parent.children[leaf.key[0] if ps == 1 else child_key(leaf.key, 0, ps)]
        leaf.parent = None  # marks it detached: its heap entries are dead, lock() refuses it
        self.num_nodes -= 1
        self._heap.push(parent, self.num_nodes)  # it may have just become an evictable leaf
        return leaf.pages if leaf.page_array is None else leaf.page_array

    # --- inspection ----------------------------------------------------------------------------

    def _recount(self) -> Recount:
        return recount_tree(self)

    def to_dict(self) -> dict[str, Any]:
        """The shared keys plus "policy" and "nodes" (see `tree_nodes_dict`)."""
        policy = self.policy.name or type(self.policy).__name__
        return {**self._header(), "policy": policy, "nodes": tree_nodes_dict(self.root)}

    def dump(self) -> str:
        return tree_dump(self)
