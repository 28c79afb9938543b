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
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np

from .allocator import HELD, PageAllocator, partition_problem
from .page_flags import PageIds, join_pages

NodeRef: TypeAlias = Any
"""An opaque node handle to pass back to lock/unlock. Every cache has a root handle: what an empty
match returns; locking and unlocking it is a no-op."""


class IntegrityError(AssertionError):
    """The cache's bookkeeping is inconsistent (a bug in the cache or its caller)."""


# MatchResult and InsertResult are plain records that callers only read: not frozen, because
# a frozen dataclass's __init__ costs about three times as much, once per match and insert.
@dataclass(slots=True)
class MatchResult:
    pages: list[int]  # the cache's pages for the matched prefix, one per page_size tokens
    cached_len: int  # matched tokens: a multiple of page_size
    node: NodeRef  # the node ending the match (the root when nothing matched): what to lock
    # The hierarchical cache only: tokens after cached_len whose KV sits in the host pool (or is
    # on its way back), ending at host_node; `load_back` brings them to the device.
    host_len: int = 0
    host_node: NodeRef = None


@dataclass(slots=True)
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
    # The host tier (hierarchical cache; zero elsewhere). Device hits are `hit_tokens`.
    host_pages: int = 0  # the host pool's size in pages
    host_free_pages: int = 0
    host_cached_tokens: int = 0
    host_hit_tokens: int = 0  # matched tokens found on the host (loaded back, or loading)
    load_back_tokens: int = 0  # tokens copied host -> device
    load_back_seconds: float = 0.0  # from a load's start to its completion seen, summed
    write_back_tokens: int = 0  # tokens copied device -> host
    host_evicted_pages: int = 0  # host copies dropped (host LRU)


@dataclass(slots=True, frozen=True)
class Recount:
    """What a cache's own structure holds, counted by walking it (for `check_integrity`)."""

    pages: list[int]  # every cached page, once per place it appears
    locked_pages: int
    num_nodes: int  # the root included


class PrefixCache(ABC):
    """A cache of KV pages keyed by token-id prefixes, owning the pool's free list.

    The base keeps what every cache shares: the free list, a flag per page the cache owns, the
    counters, allocation with eviction, statistics and the page-partition half of the integrity
    check. A cache adds its structure (match, insert, lock, unlock), its eviction order
    (`_evict_next`) and a walk that recounts it (`_recount`). Every page a cache takes goes
    through `_own` and every page it gives back through `_disown`, which keep the flags and the
    cached-page count exact; the cache itself maintains `num_nodes` and `_locked_pages`.
    """

    kind: ClassVar[str]  # the registry's name for this cache: to_dict's "kind"
    holder: ClassVar[str] = "cache"  # how error messages name the owner of cached pages
    shares_prefixes: ClassVar[bool] = True  # False: nothing ever matches (inserting is optional)

    def __init__(self, num_pages: int, page_size: int = 1, policy: str = "lru") -> None:
        """A cache without a choice of eviction order evicts least recently used first: it takes
        only `policy="lru"` (the radix cache takes any of EVICTION_POLICIES)."""
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        if policy != "lru":
            raise ValueError(
                f"the {self.kind} cache evicts least recently used first; eviction policy "
                f"{policy!r} needs the radix cache"
            )
        self.num_pages = num_pages
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages, self.holder)
        self._cached_pages = 0
        self._locked_pages = 0
        self.num_nodes = 1  # tree nodes or entries, the root included
        self.hit_tokens = 0
        self.total_match_tokens = 0
        self.num_matches = 0
        self.num_inserts = 0
        self.evicted_pages = 0
        self.duplicate_pages_freed = 0

    # --- the cache's own structure -------------------------------------------------------------

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
    def _evict_next(self) -> PageIds:
        """Takes the first unlocked leaf in eviction order out of the structure and returns its
        pages, still flagged owned: `evict` disowns a whole batch at once. [] when none is left."""

    @abstractmethod
    def _recount(self) -> Recount:
        """Checks the cache's own structure (raising IntegrityError) and recounts it: reference
        counts never negative, every node's key length equal to its pages times page_size, the
        eviction structure listing exactly the evictable nodes."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view of the whole cache (for an HTTP debug endpoint): "kind",
        "page_size", "num_pages", "stats" (see `_header`) and the cache's own entries."""

    @abstractmethod
    def dump(self) -> str:
        """A compact human-readable text view of the whole cache (first line: `summary`)."""

    # --- pages ---------------------------------------------------------------------------------

    def _own(self, pages: PageIds) -> None:
        """Pages handed to the cache by insert; ValueError (no change) unless all are held."""
        self.allocator.take(pages)
        self._cached_pages += len(pages)

    def _disown(self, pages: PageIds) -> None:
        """Cached pages going back to the free list (evicted or released)."""
        self.allocator.release(pages)
        self._cached_pages -= len(pages)

    def _check_handed_over(self, pages: list[int]) -> None:
        """ValueError unless `pages` are held privately by the caller: distinct, in range, neither
        free nor the cache's own."""
        self.allocator.check(pages, HELD, "insert")

    def _free_duplicates(self, pages: list[int]) -> None:
        """Frees the caller's pages that insert found already cached (under other page ids)."""
        if pages:
            self.allocator.free(pages, "insert")
            self.duplicate_pages_freed += len(pages)

    def _check_insert_shape(self, num_tokens: int, num_pages: int) -> None:
        if num_tokens % self.page_size or num_pages != num_tokens // self.page_size:
            raise ValueError(
                f"insert needs whole pages: {num_tokens} tokens, {num_pages} pages, "
                f"page_size {self.page_size}"
            )

    def alloc_pages(self, num_pages: int) -> list[int] | None:
        """`num_pages` private pages from the free list, evicting unlocked leaves in policy order
        (LRU by default) when it is short. Returns None and evicts nothing when even evicting
        everything evictable would not be enough. `alloc_pages(0)` is `[]`."""
        if num_pages < 0:
            raise ValueError(f"cannot allocate {num_pages} pages")
        short = num_pages - self.allocator.num_free
        if short > 0:
            if short > self.num_evictable_pages:
                return None  # evict nothing: a failed allocation must not cost the cache
            self.evict(short)
        return self.allocator.alloc(num_pages)

    def free_pages(self, pages: Iterable[int]) -> None:
        """Returns privately held pages to the free list (never pages the cache owns).
        Raises ValueError for a page out of range or already free."""
        self.allocator.free(pages, "free_pages")

    def evict(self, num_pages: int) -> int:
        """Evicts whole unlocked leaves in policy order until at least `num_pages` pages are
        freed or nothing evictable is left; returns the pages freed (may exceed the ask)."""
        parts: list[PageIds] = []
        count = 0
        arrays = True  # every leaf kept its pages as an array (long edges): one concatenation
        while count < num_pages:
            pages = self._evict_next()
            if len(pages) == 0:
                break
            parts.append(pages)
            count += len(pages)
            arrays = arrays and type(pages) is np.ndarray
        if parts:
            joined = np.concatenate(parts) if arrays and len(parts) > 1 else join_pages(parts)
            self._disown(joined)
        self.evicted_pages += count
        return count

    def flush(self) -> int:
        """Evicts everything unlocked; returns the pages freed. Locked paths stay."""
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

    @property
    def num_evictable_pages(self) -> int:
        """Cached pages no one has locked: what eviction could free."""
        return self._cached_pages - self._locked_pages

    @property
    def num_available_pages(self) -> int:
        """The most one `alloc_pages` call could return right now."""
        return self.allocator.num_free + self.num_evictable_pages

    def stats(self) -> CacheStats:
        ps = self.page_size
        return CacheStats(
            num_pages=self.num_pages,
            page_size=ps,
            free_pages=self.allocator.num_free,
            cached_tokens=self._cached_pages * ps,
            evictable_tokens=self.num_evictable_pages * ps,
            locked_tokens=self._locked_pages * ps,
            hit_tokens=self.hit_tokens,
            total_match_tokens=self.total_match_tokens,
            hit_rate=self.hit_tokens / self.total_match_tokens if self.total_match_tokens else 0.0,
            evicted_pages=self.evicted_pages,
            num_nodes=self.num_nodes,
            num_matches=self.num_matches,
            num_inserts=self.num_inserts,
            duplicate_pages_freed=self.duplicate_pages_freed,
        )

    def summary(self) -> str:
        """One line: a dump's header."""
        return (
            f"page_size={self.page_size}, {self.num_pages} pages ({self.num_free_pages} free, "
            f"{self._cached_pages} cached, {self._locked_pages} locked), {self.num_nodes} nodes"
        )

    def _header(self) -> dict[str, Any]:
        """to_dict's shared keys."""
        return {
            "kind": self.kind,
            "page_size": self.page_size,
            "num_pages": self.num_pages,
            "stats": asdict(self.stats()),
        }

    def check_integrity(self, held_pages: Iterable[int] | None = None) -> None:
        """Raises IntegrityError unless the bookkeeping is consistent: free, cached and held
        pages pairwise disjoint and in range (with `held_pages` given, together exactly the pool),
        reference counts never negative, every node's key length equal to its pages times
        page_size, cached counters equal to a recount, and the eviction structure listing
        exactly the evictable nodes. Costs a walk over the whole cache: for tests and debugging."""
        recount = self._recount()
        for name, counted, recounted in (
            ("node count", self.num_nodes, recount.num_nodes),
            ("cached page count", self._cached_pages, len(recount.pages)),
            ("locked page count", self._locked_pages, recount.locked_pages),
        ):
            if counted != recounted:
                raise IntegrityError(f"{name} is {counted} but the {self.holder} has {recounted}")
        flagged = set(self.allocator.cached_pages())
        if flagged != set(recount.pages):
            wrong = sorted(flagged ^ set(recount.pages))
            raise IntegrityError(f"owned-page flags disagree with the {self.holder} on {wrong}")
        held = None if held_pages is None else list(held_pages)
        free = self.allocator.free_list()
        problem = self.allocator.problem() or partition_problem(
            self.num_pages, free, recount.pages, held
        )
        if problem:
            raise IntegrityError(problem)
