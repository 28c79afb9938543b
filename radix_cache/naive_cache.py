r"""A cache that shares nothing: `--prefix-cache naive`, what `--disable-radix-cache` selects.

It keeps the PrefixCache protocol (see base.py) so the scheduler code is the same for both caches:

- `match_prefix` never matches: pages [], cached_len 0, the root handle.
- `insert(tokens, pages)` keeps the caller's pages exactly (`result.pages == pages`, nothing is
  ever a duplicate) under a private handle that no match can reach, and returns that handle to
  lock. A request's second insert extends its own chain of handles:

      root --[p3 p9]--> h1 --[p4]--> h2          (h1: first prefill chunk, h2: the next one)

  `cached_len` is the part of `pages` this chain already held (the request's own earlier insert).
- `unlock` frees a handle's pages as soon as nothing locks it: nothing outlives its last user.
  So, as with the radix cache, the request frees only its private tail with `free_pages`.

A scheduler that skips `insert` altogether for this cache (every page private until
`free_pages`) is also correct. Handles inserted but never locked are the only evictable pages.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import InsertResult, IntegrityError, MatchResult, PrefixCache, Recount

_ids = itertools.count(1)


@dataclass(slots=True, eq=False)
class NaiveNode:
    pages: list[int]
    parent: NaiveNode | None  # None for the root and for a freed handle
    lock_ref: int = 0
    num_children: int = 0
    node_id: int = field(default_factory=lambda: next(_ids))


class NaiveCache(PrefixCache):
    """The pool's free list plus private, never matched page chains (see the module docstring)."""

    kind: ClassVar[str] = "naive"
    shares_prefixes: ClassVar[bool] = False

    def __init__(self, num_pages: int, page_size: int = 1, policy: str = "lru") -> None:
        super().__init__(num_pages, page_size, policy)
        self.root = NaiveNode([], None, node_id=0)
        self._owner: dict[int, NaiveNode] = {}  # page -> the handle holding it
        self._evictable: dict[int, NaiveNode] = {}  # unlocked leaves by node_id, oldest first

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        self.total_match_tokens += len(token_ids)
        self.num_matches += 1
        return MatchResult([], 0, self.root)

    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        self._check_insert_shape(len(token_ids), len(pages))
        node, done = self._follow_chain(list(pages))
        new_pages = list(pages[done:])
        self._check_handed_over(new_pages)
        if new_pages:
            node = self._add_leaf(node, new_pages)
        self.num_inserts += 1
        return InsertResult(done * self.page_size, list(pages), node)

    def _follow_chain(self, pages: list[int]) -> tuple[NaiveNode, int]:
        """The handle ending the longest prefix of `pages` already held as a chain, splitting a
        handle the prefix ends inside; and that prefix's length in pages."""
        node, done = self.root, 0
        while done < len(pages):
            owner = self._owner.get(pages[done])
            if owner is None:
                break
            if owner.parent is not node:
                raise ValueError(f"page {pages[done]} belongs to another request's chain")
            held = owner.pages
            if pages[done : done + len(held)] == held:
                node, done = owner, done + len(held)
                continue
            same = 0
            while (
                done + same < len(pages) and same < len(held) and pages[done + same] == held[same]
            ):
                same += 1
            if done + same < len(pages):
                raise ValueError(f"pages diverge from the chain they extend at page {done + same}")
            return self._split(owner, same), done + same
        return node, done

    def _split(self, node: NaiveNode, at: int) -> NaiveNode:
        assert node.parent is not None
        upper = NaiveNode(node.pages[:at], node.parent, node.lock_ref, num_children=1)
        for page in upper.pages:
            self._owner[page] = upper
        node.pages, node.parent = node.pages[at:], upper
        self.num_nodes += 1
        return upper

    def _add_leaf(self, parent: NaiveNode, pages: list[int]) -> NaiveNode:
        leaf = NaiveNode(pages, parent)
        parent.num_children += 1
        self._evictable.pop(parent.node_id, None)
        for page in pages:
            self._owner[page] = leaf
        self._own(pages)
        self.num_nodes += 1
        self._evictable[leaf.node_id] = leaf
        return leaf

    def lock(self, node: NaiveNode) -> None:
        if node.parent is None:
            if node is self.root:
                return
            raise ValueError(f"lock of handle {node.node_id}, which was freed")
        while node is not self.root:
            if node.lock_ref == 0:
                self._locked_pages += len(node.pages)
                self._evictable.pop(node.node_id, None)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: NaiveNode) -> None:
        if node is self.root:
            return
        if node.parent is None or node.lock_ref <= 0:
            raise IntegrityError(f"unlock of handle {node.node_id} (lock count {node.lock_ref})")
        bottom = node
        while node is not self.root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._locked_pages -= len(node.pages)
            node = node.parent  # type: ignore[assignment]
        # Nothing is kept for reuse: free every handle no one needs any more, bottom up.
        while bottom is not self.root and bottom.lock_ref == 0 and bottom.num_children == 0:
            parent = bottom.parent
            assert parent is not None  # every handle in the cache has one
            self._disown(self._detach(bottom))  # a release, not an eviction: not counted
            bottom = parent

    def _detach(self, node: NaiveNode) -> list[int]:
        """Takes the handle out of the cache; returns its pages (still flagged owned)."""
        parent = node.parent
        assert parent is not None
        self._evictable.pop(node.node_id, None)
        for page in node.pages:
            del self._owner[page]
        self.num_nodes -= 1
        node.parent = None
        parent.num_children -= 1
        if parent is not self.root and parent.lock_ref == 0 and parent.num_children == 0:
            self._evictable[parent.node_id] = parent
        return node.pages

    def _evict_next(self) -> list[int]:
        if not self._evictable:
            return []
        return self._detach(next(iter(self._evictable.values())))

    def _nodes(self) -> list[NaiveNode]:
        return list({node.node_id: node for node in self._owner.values()}.values())

    def _recount(self) -> Recount:
        nodes = self._nodes()
        node_ids = {node.node_id for node in nodes}
        children: dict[int, list[NaiveNode]] = {}
        for node in nodes:
            if node.parent is None or not node.pages:
                raise IntegrityError(f"handle {node.node_id} is detached or empty")
            if any(self._owner.get(page) is not node for page in node.pages):
                raise IntegrityError(f"handle {node.node_id} and the owner map disagree")
            if node.parent is not self.root and node.parent.node_id not in node_ids:
                raise IntegrityError(f"handle {node.node_id}'s parent holds no pages")
            children.setdefault(node.parent.node_id, []).append(node)
        locked = 0
        for node in nodes:
            below = children.get(node.node_id, [])
            if node.lock_ref < sum(c.lock_ref for c in below) or node.lock_ref < 0:
                raise IntegrityError(f"handle {node.node_id} has lock count {node.lock_ref}")
            if node.num_children != len(below):
                raise IntegrityError(f"handle {node.node_id} miscounts its children")
            locked += len(node.pages) if node.lock_ref > 0 else 0
            if (node.lock_ref == 0 and not below) != (node.node_id in self._evictable):
                raise IntegrityError(f"handle {node.node_id} and the evictable set disagree")
        if len(self._evictable) > len(nodes):
            raise IntegrityError("the evictable set lists handles that hold no pages")
        return Recount(list(self._owner), locked, 1 + len(nodes))

    def to_dict(self) -> dict[str, Any]:
        handles = [
            {
                "id": n.node_id,
                "parent": n.parent.node_id if n.parent is not None else None,
                "pages": list(n.pages),
                "lock_ref": n.lock_ref,
            }
            for n in self._nodes()
        ]
        return {**self._header(), "handles": handles}

    def dump(self) -> str:
        lines = [f"naive cache (no sharing): {self.summary()}"]
        for n in sorted(self._nodes(), key=lambda n: n.node_id):
            parent = n.parent.node_id if n.parent is not None else "-"
            lines.append(f"  handle #{n.node_id} <- #{parent}: pages {n.pages}, lock {n.lock_ref}")
        return "\n".join(lines)
