"""A bulk-operation reference for bench_radix_cache: a radix tree at page size 1 whose page lists
are numpy arrays and whose free list grows by concatenation, with no checks at all: the way the
tensor-based trees of SGLang and mini-sglang keep pages (written here from that description, not
copied). It runs the same protocol as the caches under test, so the replay times it call by call.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True, eq=False)
class RefNode:
    key: list[int]
    value: np.ndarray
    parent: RefNode | None
    children: dict[int, RefNode] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0


@dataclass(slots=True)
class RefStats:
    num_nodes: int
    hit_rate: float
    evicted_pages: int


@dataclass(slots=True)
class RefResult:
    pages: list[int]
    cached_len: int
    node: RefNode


class BulkReferenceCache:
    """match_prefix / insert / lock / unlock / alloc_pages / evict / free_pages at page size 1."""

    page_size = 1

    def __init__(self, num_pages: int) -> None:
        self.num_pages = num_pages
        self.free = np.arange(num_pages, dtype=np.int64)
        self.root = RefNode([], np.empty(0, np.int64), None)
        self.clock = self.evictable = self.evicted = self.nodes = 0
        self.hits = self.asked = 0

    @property
    def num_free_pages(self) -> int:
        return len(self.free)

    @property
    def num_evictable_pages(self) -> int:
        return self.evictable

    def stats(self) -> RefStats:
        return RefStats(self.nodes + 1, self.hits / max(self.asked, 1), self.evicted)

    def _walk(self, key: list[int]) -> tuple[RefNode, int, list[np.ndarray]]:
        self.clock += 1
        node, pos, values = self.root, 0, []
        while pos < len(key):
            child = node.children.get(key[pos])
            if child is None:
                break
            n = 0
            limit = min(len(child.key), len(key) - pos)
            while n < limit and child.key[n] == key[pos + n]:
                n += 1
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = self.clock
            values.append(child.value)
            pos += n
            node = child
            if n < limit or pos == len(key):
                break
        return node, pos, values

    def _split(self, child: RefNode, n: int) -> RefNode:
        parent = child.parent
        assert parent is not None
        upper = RefNode(child.key[:n], child.value[:n], parent, lock_ref=child.lock_ref)
        upper.last_access = child.last_access
        parent.children[upper.key[0]] = upper
        child.key, child.value, child.parent = child.key[n:], child.value[n:], upper
        upper.children[child.key[0]] = child
        self.nodes += 1
        return upper

    def match_prefix(self, key: list[int]) -> RefResult:
        node, matched, values = self._walk(key)
        self.hits += matched
        self.asked += len(key)
        pages = np.concatenate(values) if values else np.empty(0, np.int64)
        return RefResult(pages.tolist(), matched, node)

    def insert(self, key: list[int], pages: list[int]) -> RefResult:
        node, matched, values = self._walk(key)
        value = np.asarray(pages, dtype=np.int64)
        # The caller's pages for the part already cached are duplicates: one concatenation.
        mine = value[:matched]
        ours = np.concatenate(values) if values else np.empty(0, np.int64)
        self.free = np.concatenate((self.free, mine[mine != ours]))
        if matched < len(key):
            leaf = RefNode(key[matched:], value[matched:], node, last_access=self.clock)
            node.children[key[matched]] = leaf
            self.evictable += len(leaf.value)
            self.nodes += 1
            node = leaf
        return RefResult(np.concatenate((ours, value[matched:])).tolist(), matched, node)

    def lock(self, node: RefNode) -> None:
        while node is not self.root and node is not None:
            if node.lock_ref == 0:
                self.evictable -= len(node.value)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: RefNode) -> None:
        while node is not self.root and node is not None:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.evictable += len(node.value)
            node = node.parent  # type: ignore[assignment]

    def evict(self, num_pages: int) -> int:
        """Collects the leaves (a walk, as the peers do), then frees oldest first."""
        leaves, stack = [], [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if not node.children and node is not self.root and node.lock_ref == 0:
                leaves.append((node.last_access, id(node), node))
        heapq.heapify(leaves)
        freed: list[np.ndarray] = []
        count = 0
        while count < num_pages and leaves:
            _, _, leaf = heapq.heappop(leaves)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.key[0]]
            freed.append(leaf.value)
            count += len(leaf.value)
            self.evictable -= len(leaf.value)
            self.nodes -= 1
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(leaves, (parent.last_access, id(parent), parent))
        if freed:
            self.free = np.concatenate((self.free, *freed))
        self.evicted += count
        return count

    def alloc_pages(self, n: int) -> list[int] | None:
        if n > len(self.free) + self.evictable:
            return None
        if n > len(self.free):
            self.evict(n - len(self.free))
        pages, self.free = self.free[:n], self.free[n:]
        return pages.tolist()

    def free_pages(self, pages: list[int]) -> None:
        self.free = np.concatenate((self.free, np.asarray(pages, dtype=np.int64)))

    def check_integrity(self, held_pages: list[int]) -> None:
        """No checks: the reference trusts its callers (that is the point of it)."""
