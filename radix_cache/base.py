"""The prefix-cache seam: the contract every cache (radix tree, naive) fulfils.

Pages are ints 0..num_pages-1 (rows of the KV pool's page dimension). A page is always in exactly
one of three places: the free list, the cache (owned by a tree node), or held privately by a
running request. `check_integrity` verifies exactly that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class IntegrityError(AssertionError):
    """The cache's bookkeeping is inconsistent (a bug, never a user error)."""


@dataclass(slots=True, frozen=True)
class MatchResult:
    pages: list[int]  # the tree's pages for the matched prefix
    cached_len: int  # matched tokens: a multiple of page_size
    node: Any  # the node ending the match (the root when nothing matched): what to lock


@dataclass(slots=True, frozen=True)
class InsertResult:
    cached_len: int  # tokens of the key that were in the tree before this insert
    pages: list[int]  # the tree's pages for the whole key after the insert
    node: Any  # the node ending at the key's end


@dataclass(slots=True)
class CacheStats:
    num_pages: int
    free_pages: int
    cached_tokens: int
    evictable_tokens: int
    locked_tokens: int
    hit_tokens: int  # tokens matched over all match_prefix calls
    queried_tokens: int  # tokens asked for over all match_prefix calls
    evicted_pages: int
    num_nodes: int

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


class PrefixCache(ABC):
    """A cache of KV pages keyed by token-id prefixes, with the pool's page allocator.

    Usage by the scheduler, per request:
      match_prefix(prompt) -> lock(node) -> alloc_pages(...) for the rest -> compute ->
      insert(tokens[:aligned], pages[:aligned // page_size]) -> adopt result.pages, lock
      result.node, unlock the old node -> ... -> unlock(node), free_pages(private tail pages).
    """

    page_size: int
    num_pages: int

    @abstractmethod
    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        """Longest cached prefix, page-aligned. Does not lock. Refreshes the matched nodes' access
        time and splits an edge that matches only partly (at a page boundary)."""

    @abstractmethod
    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        """Adds a computed prefix. len(token_ids) must be a multiple of page_size and
        len(pages) == len(token_ids) // page_size. Where the tree already holds a different page
        for the same tokens, the caller's page is a duplicate and is freed here."""

    @abstractmethod
    def lock(self, node: Any) -> None:
        """+1 reference on the node and its ancestors: none of them can be evicted."""

    @abstractmethod
    def unlock(self, node: Any) -> None:
        """-1 reference on the node and its ancestors; raises IntegrityError below zero."""

    @abstractmethod
    def alloc_pages(self, num_pages: int) -> list[int] | None:
        """Pages from the free list, evicting unlocked leaves (LRU first) if it is short.
        Returns None, evicting nothing, when even evicting everything evictable would not do."""

    @abstractmethod
    def free_pages(self, pages: Iterable[int]) -> None:
        """Returns privately held pages to the free list."""

    @abstractmethod
    def evict(self, num_pages: int) -> int:
        """Evicts whole unlocked leaves until at least num_pages are freed (or none are left);
        returns the pages freed."""

    @abstractmethod
    def flush(self) -> int:
        """Evicts everything unlocked; returns the pages freed."""

    @property
    @abstractmethod
    def num_free_pages(self) -> int: ...

    @property
    @abstractmethod
    def num_cached_pages(self) -> int: ...

    @property
    @abstractmethod
    def num_locked_pages(self) -> int: ...

    @property
    def num_evictable_pages(self) -> int:
        """Cached pages no running request holds: what eviction could free."""
        return self.num_cached_pages - self.num_locked_pages

    @abstractmethod
    def stats(self) -> CacheStats: ...

    @abstractmethod
    def check_integrity(self, held_pages: Iterable[int] | None = None) -> None:
        """Raises IntegrityError unless free, cached and (when given) held pages partition the
        pool, ref counts are sane, keys match pages, and the eviction structure matches the tree."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def dump(self) -> str: ...
