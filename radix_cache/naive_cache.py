r"""A cache that shares nothing: the `--disable-radix-cache` mode.

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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .allocator import PageAllocator
from .base import (
    CacheStats,
    InsertResult,
    IntegrityError,
    MatchResult,
    PrefixCache,
    hit_rate,
)
from .inspection import check_partition

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

    def __init__(self, num_pages: int, page_size: int = 1) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.num_pages = num_pages
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages)
        self.root = NaiveNode([], None, node_id=0)
        self._owner: dict[int, NaiveNode] = {}  # page -> the handle holding it
        self._evictable: dict[int, NaiveNode] = {}  # unlocked leaves by node_id, oldest first
        self._locked_pages = 0
        self.total_match_tokens = 0
        self.num_matches = 0
        self.num_inserts = 0
        self.evicted_pages = 0

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        self.total_match_tokens += len(token_ids)
        self.num_matches += 1
        return MatchResult([], 0, self.root)

    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        ps = self.page_size
        if len(token_ids) % ps or len(pages) != len(token_ids) // ps:
            raise ValueError(
                f"insert needs whole pages: {len(token_ids)} tokens, {len(pages)} pages, "
                f"page_size {ps}"
            )
        self.allocator.check_not_free(pages, "insert")
        node, done = self._follow_chain(list(pages))
        new_pages = list(pages[done:])
        if any(page in self._owner for page in new_pages):
            raise ValueError("insert was given a page another handle holds")
        if new_pages:
            node = self._add_leaf(node, new_pages)
        self.num_inserts += 1
        return InsertResult(done * ps, list(pages), node)

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
        return upper

    def _add_leaf(self, parent: NaiveNode, pages: list[int]) -> NaiveNode:
        leaf = NaiveNode(pages, parent)
        parent.num_children += 1
        self._evictable.pop(parent.node_id, None)
        for page in pages:
            self._owner[page] = leaf
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
            self._remove(bottom)  # a release, not an eviction: not counted
            bottom = parent  # type: ignore[assignment]

    def _remove(self, node: NaiveNode) -> int:
        parent = node.parent
        assert parent is not None
        self._evictable.pop(node.node_id, None)
        for page in node.pages:
            del self._owner[page]
        self.allocator.free(node.pages)
        node.parent = None
        parent.num_children -= 1
        if parent is not self.root and parent.lock_ref == 0 and parent.num_children == 0:
            self._evictable[parent.node_id] = parent
        return len(node.pages)

    def alloc_pages(self, num_pages: int) -> list[int] | None:
        if num_pages < 0:
            raise ValueError(f"cannot allocate {num_pages} pages")
        short = num_pages - self.allocator.num_free
        if short > 0:
            if short > self.num_evictable_pages:
                return None
            self.evict(short)
        return self.allocator.alloc(num_pages)

    def free_pages(self, pages: Iterable[int]) -> None:
        pages = list(pages)
        if any(page in self._owner for page in pages):
            raise ValueError("free_pages was given a page an inserted handle holds: unlock it")
        self.allocator.free(pages)

    def evict(self, num_pages: int) -> int:
        freed = 0
        while freed < num_pages and self._evictable:
            freed += self._remove(next(iter(self._evictable.values())))
        self.evicted_pages += freed
        return freed

    def flush(self) -> int:
        return self.evict(self.num_evictable_pages)

    @property
    def num_free_pages(self) -> int:
        return self.allocator.num_free

    @property
    def num_cached_pages(self) -> int:
        return len(self._owner)

    @property
    def num_locked_pages(self) -> int:
        return self._locked_pages

    def _nodes(self) -> list[NaiveNode]:
        return list({node.node_id: node for node in self._owner.values()}.values())

    def stats(self) -> CacheStats:
        ps = self.page_size
        return CacheStats(
            num_pages=self.num_pages,
            page_size=ps,
            free_pages=self.num_free_pages,
            cached_tokens=self.num_cached_pages * ps,
            evictable_tokens=self.num_evictable_pages * ps,
            locked_tokens=self._locked_pages * ps,
            hit_tokens=0,
            total_match_tokens=self.total_match_tokens,
            hit_rate=hit_rate(0, self.total_match_tokens),
            evicted_pages=self.evicted_pages,
            num_nodes=1 + len(self._nodes()),
            num_matches=self.num_matches,
            num_inserts=self.num_inserts,
        )

    def check_integrity(self, held_pages: Iterable[int] | None = None) -> None:
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
        if locked != self._locked_pages or len(self._evictable) > len(nodes):
            raise IntegrityError(f"locked page count {self._locked_pages}, recounted {locked}")
        problem = self.allocator.check()
        if problem:
            raise IntegrityError(problem)
        free = self.allocator.free_list()
        check_partition(self.num_pages, free, list(self._owner), held_pages)

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
        return {
            "kind": "naive",
            "page_size": self.page_size,
            "num_pages": self.num_pages,
            "stats": asdict(self.stats()),
            "handles": handles,
        }

    def dump(self) -> str:
        lines = [
            f"naive cache (no sharing): page_size={self.page_size}, {self.num_pages} pages "
            f"({self.num_free_pages} free, {self.num_cached_pages} in handles, "
            f"{self._locked_pages} locked)"
        ]
        for n in sorted(self._nodes(), key=lambda n: n.node_id):
            parent = n.parent.node_id if n.parent is not None else "-"
            lines.append(f"  handle #{n.node_id} <- #{parent}: pages {n.pages}, lock {n.lock_ref}")
        return "\n".join(lines)
