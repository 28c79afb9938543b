"""The prefix-cache seam: the contract every cache (radix tree, naive, block hash) fulfils.

Pages are ints 0..num_pages-1 (rows of the KV pool's page dimension). A page is always in exactly
one of three places:

    free     on the cache's free list, handed out by alloc_pages
    cached   owned by the cache (a tree node, a hash table entry), shared by whoever locks it
    held     owned privately by one running request (allocated, not yet inserted, or its
             partial tail page, which never enters a cache)

`check_integrity(held_pages)` verifies exactly that partition.

The scheduler's protocol, one request at a time; the same code works for every cache here:

    m = cache.match_prefix(prompt)                 # m.pages are cache-owned, m.cached_len tokens
    cache.lock(m.node); node = m.node              # lock before anything can allocate
    table = m.pages + cache.alloc_pages(k)         # None: out of pages, wait or preempt
    ... compute KV for tokens [m.cached_len, kv_len) into table ...
    aligned = kv_len // page_size * page_size      # after a prefill chunk or on finish
    r = cache.insert(tokens[:aligned], table[: aligned // page_size])
    table[: aligned // page_size] = r.pages        # duplicates were freed by insert
    cache.lock(r.node); cache.unlock(node); node = r.node   # lock first: never unprotected
    ... on finish: the insert above, then
    cache.unlock(node); cache.free_pages(table[aligned // page_size :])   # the private tail

After `insert`, the inserted pages belong to the cache (not to the request): the request gives
them back only by unlocking, never by `free_pages`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

NodeRef: TypeAlias = Any
"""An opaque node handle to pass back to lock/unlock. Every cache has a root handle: what an empty
match returns; locking and unlocking it is a no-op."""


class IntegrityError(AssertionError):
    """The cache's bookkeeping is inconsistent (a bug in the cache or its caller)."""


@dataclass(slots=True, frozen=True)
class MatchResult:
    pages: list[int]  # the cache's pages for the matched prefix, one per page_size tokens
    cached_len: int  # matched tokens: a multiple of page_size
    node: NodeRef  # the node ending the match (the root when nothing matched): what to lock


@dataclass(slots=True, frozen=True)
class InsertResult:
    cached_len: int  # tokens of the key the cache held before this insert
    pages: list[int]  # the cache's pages for the whole key after the insert
    node: NodeRef  # the node ending at the key's end: what to lock


@dataclass(slots=True)
class CacheStats:
    """A snapshot of counters; every field is a plain int or float (JSON and metrics ready)."""

    num_pages: int
    page_size: int
    free_pages: int
    cached_tokens: int
    evictable_tokens: int  # cached and unlocked: what eviction could free
    locked_tokens: int
    hit_tokens: int  # tokens matched over all match_prefix calls
    total_match_tokens: int  # tokens asked for over all match_prefix calls
    hit_rate: float  # hit_tokens / total_match_tokens (0.0 before any match)
    evicted_pages: int
    num_nodes: int  # tree nodes (root included), or entries for a flat cache
    num_matches: int = 0
    num_inserts: int = 0
    duplicate_pages_freed: int = 0  # caller pages that insert found already cached


def hit_rate(hit_tokens: int, total_match_tokens: int) -> float:
    return hit_tokens / total_match_tokens if total_match_tokens else 0.0


class PrefixCache(ABC):
    """A cache of KV pages keyed by token-id prefixes, owning the pool's free list."""

    page_size: int
    num_pages: int  # pages in the pool: ids 0..num_pages-1

    @abstractmethod
    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        """The longest cached prefix of `token_ids`, in whole pages.

        Does not lock: lock `node` before anything else can allocate (an allocation may evict the
        match). Counts as an access for eviction order (LRU time, LFU hits) of the matched nodes.
        An edge that matches only partly is split at the last whole matched page, so `node` ends
        exactly at `cached_len`. A partial trailing page of `token_ids` never matches.
        """

    @abstractmethod
    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        """Hands computed whole pages to the cache.

        `len(token_ids)` must be a multiple of page_size and `len(pages)` equal to
        `len(token_ids) // page_size` (the caller keeps its partial tail page private), else
        ValueError. Where the cache already holds a different page for the same tokens, the
        caller's page is a duplicate and is freed here; a page equal to the cache's own is left
        alone. The caller replaces its page table prefix with `result.pages`, locks `result.node`
        and unlocks its previous node. Counts as an access of the whole key, not as a hit.
        """

    @abstractmethod
    def lock(self, node: NodeRef) -> None:
        """+1 reference on the node and its ancestors: none of them can be evicted.
        Raises ValueError for a node that is no longer in the cache (evicted)."""

    @abstractmethod
    def unlock(self, node: NodeRef) -> None:
        """-1 reference on the node and its ancestors; raises IntegrityError below zero."""

    @abstractmethod
    def alloc_pages(self, num_pages: int) -> list[int] | None:
        """`num_pages` private pages from the free list, evicting unlocked leaves in policy order
        (LRU by default) when it is short. Returns None and evicts nothing when even evicting
        everything evictable would not be enough. `alloc_pages(0)` is `[]`."""

    @abstractmethod
    def free_pages(self, pages: Iterable[int]) -> None:
        """Returns privately held pages to the free list (never pages the cache owns).
        Raises ValueError for a page out of range or already free."""

    @abstractmethod
    def evict(self, num_pages: int) -> int:
        """Evicts whole unlocked leaves in policy order until at least `num_pages` pages are
        freed or nothing evictable is left; returns the pages freed (may exceed the ask)."""

    @abstractmethod
    def flush(self) -> int:
        """Evicts everything unlocked; returns the pages freed. Locked paths stay."""

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
        """Cached pages no one has locked: what eviction could free."""
        return self.num_cached_pages - self.num_locked_pages

    @property
    def num_available_pages(self) -> int:
        """The most one `alloc_pages` call could return right now."""
        return self.num_free_pages + self.num_evictable_pages

    @abstractmethod
    def stats(self) -> CacheStats: ...

    @abstractmethod
    def check_integrity(self, held_pages: Iterable[int] | None = None) -> None:
        """Raises IntegrityError unless the bookkeeping is consistent: free, cached and held
        pages pairwise disjoint and in range (with `held_pages` given, together exactly the pool),
        reference counts never negative, every node's key length equal to its pages times
        page_size, cached counters equal to a recount, and the eviction structure listing
        exactly the evictable nodes. Costs a walk over the whole cache: for tests and debugging."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view of the whole cache (for an HTTP debug endpoint)."""

    @abstractmethod
    def dump(self) -> str:
        """A compact human-readable text view of the whole cache."""
