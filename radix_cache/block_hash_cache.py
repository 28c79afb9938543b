r"""A hash-per-block prefix cache (the vLLM design), for comparison with the radix tree.

Each full block (page) of a prompt is keyed by the hash of (its parent block's hash, its tokens),
so a block's hash names the whole prefix ending at it:

    tokens:  [ b0 ][ b1 ][ b2 ]          h0 = hash((SEED, b0)), h1 = hash((h0, b1)), ...
    table:   h0 -> p7, h1 -> p2, h2 -> p9

A lookup hashes block after block until a hash is missing: O(prompt length) hashing on every
match, however long the cached path. Cached blocks carry a reference count; those at zero sit in
an LRU queue and are evicted one block at a time from its head. Blocks are queued and touched
tail first, so a parent is always newer than its children and a prefix loses its last blocks
first. Python's tuple hash is 64-bit; a collision would alias two prefixes (vLLM accepts the same
risk with its own hashes).

Same protocol as the radix cache (base.py); a node handle is the chain of blocks matched or
inserted, and locking it references every block in it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
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
from .node import as_token_list

SEED_HASH = 0x5EED


@dataclass(slots=True, frozen=True, eq=False)
class BlockChain:
    pages: tuple[int, ...]
    hashes: tuple[int, ...]  # hashes[i] names the prefix ending with pages[i]


class BlockHashCache(PrefixCache):
    def __init__(self, num_pages: int, page_size: int = 1) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.num_pages = num_pages
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages)
        self.root = BlockChain((), ())
        self._table: dict[int, int] = {}  # block hash -> page
        self._hash_of: list[int | None] = [None] * num_pages
        self._ref = [0] * num_pages
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached pages at ref 0, oldest first
        self._locked_pages = 0
        self.hit_tokens = 0
        self.total_match_tokens = 0
        self.num_matches = 0
        self.num_inserts = 0
        self.evicted_pages = 0
        self.duplicate_pages_freed = 0

    def _touch(self, pages: Iterable[int]) -> None:
        # Reversed, so the first block of a prefix ends up the most recent: tails go first.
        lru, ref = self._lru, self._ref
        for page in reversed(list(pages)):
            if ref[page] == 0:
                lru[page] = None
                lru.move_to_end(page)

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        tokens, ps, table = as_token_list(token_ids), self.page_size, self._table
        h, pages, hashes = SEED_HASH, [], []
        for start in range(0, len(tokens) - ps + 1, ps):
            h = hash((h, tuple(tokens[start : start + ps])))
            page = table.get(h)
            if page is None:
                break
            pages.append(page)
            hashes.append(h)
        self._touch(pages)
        self.hit_tokens += len(pages) * ps
        self.total_match_tokens += len(tokens)
        self.num_matches += 1
        return MatchResult(pages, len(pages) * ps, BlockChain(tuple(pages), tuple(hashes)))

    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        tokens, ps = as_token_list(token_ids), self.page_size
        if len(tokens) % ps or len(pages) != len(tokens) // ps:
            raise ValueError(
                f"insert needs whole pages: {len(tokens)} tokens, {len(pages)} pages, "
                f"page_size {ps}"
            )
        h, hashes, found = SEED_HASH, [], []
        for i in range(len(pages)):
            h = hash((h, tuple(tokens[i * ps : (i + 1) * ps])))
            hashes.append(h)
            found.append(self._table.get(h))
        # Only pages the caller hands over need checking; the rest are the cache's own.
        handed_over = [m for m, theirs in zip(pages, found, strict=True) if m != theirs]
        self.allocator.check_not_free(handed_over, "insert")
        if any(self._hash_of[mine] is not None for mine in handed_over):
            raise ValueError("insert was given a page cached for other tokens")
        cached_len = next((i for i, page in enumerate(found) if page is None), len(found)) * ps
        result = list(pages)
        duplicates = []
        for i, (mine, theirs) in enumerate(zip(pages, found, strict=True)):
            if theirs is None:
                self._table[hashes[i]] = mine
                self._hash_of[mine] = hashes[i]
            elif theirs != mine:
                duplicates.append(mine)
                result[i] = theirs
        if duplicates:
            self.allocator.free(duplicates)
            self.duplicate_pages_freed += len(duplicates)
        self._touch(result)
        self.num_inserts += 1
        return InsertResult(cached_len, result, BlockChain(tuple(result), tuple(hashes)))

    def lock(self, node: BlockChain) -> None:
        hash_of, ref, lru = self._hash_of, self._ref, self._lru
        if any(hash_of[p] != h for p, h in zip(node.pages, node.hashes, strict=True)):
            raise ValueError("lock of a block chain that was partly evicted: match again")
        for page in node.pages:
            if ref[page] == 0:
                del lru[page]
                self._locked_pages += 1
            ref[page] += 1

    def unlock(self, node: BlockChain) -> None:
        ref = self._ref
        if any(ref[page] <= 0 for page in node.pages):
            raise IntegrityError("unlock of a block chain that is not locked")
        for page in reversed(node.pages):  # tail blocks queue first, so they are evicted first
            ref[page] -= 1
            if ref[page] == 0:
                self._locked_pages -= 1
                self._lru[page] = None

    def alloc_pages(self, num_pages: int) -> list[int] | None:
        if num_pages < 0:
            raise ValueError(f"cannot allocate {num_pages} pages")
        short = num_pages - self.allocator.num_free
        if short > 0:
            if short > len(self._lru):
                return None
            self.evict(short)
        return self.allocator.alloc(num_pages)

    def free_pages(self, pages: Iterable[int]) -> None:
        pages = list(pages)
        if any(self._hash_of[page] is not None for page in pages if 0 <= page < self.num_pages):
            raise ValueError("free_pages was given a cached block: unlock it instead")
        self.allocator.free(pages)

    def evict(self, num_pages: int) -> int:
        freed = []
        while len(freed) < num_pages and self._lru:
            page, _ = self._lru.popitem(last=False)
            del self._table[self._hash_of[page]]  # type: ignore[index]
            self._hash_of[page] = None
            freed.append(page)
        self.allocator.free(freed)
        self.evicted_pages += len(freed)
        return len(freed)

    def flush(self) -> int:
        return self.evict(len(self._lru))

    @property
    def num_free_pages(self) -> int:
        return self.allocator.num_free

    @property
    def num_cached_pages(self) -> int:
        return len(self._table)

    @property
    def num_locked_pages(self) -> int:
        return self._locked_pages

    def stats(self) -> CacheStats:
        ps = self.page_size
        return CacheStats(
            num_pages=self.num_pages,
            page_size=ps,
            free_pages=self.num_free_pages,
            cached_tokens=len(self._table) * ps,
            evictable_tokens=len(self._lru) * ps,
            locked_tokens=self._locked_pages * ps,
            hit_tokens=self.hit_tokens,
            total_match_tokens=self.total_match_tokens,
            hit_rate=hit_rate(self.hit_tokens, self.total_match_tokens),
            evicted_pages=self.evicted_pages,
            num_nodes=1 + len(self._table),
            num_matches=self.num_matches,
            num_inserts=self.num_inserts,
            duplicate_pages_freed=self.duplicate_pages_freed,
        )

    def check_integrity(self, held_pages: Iterable[int] | None = None) -> None:
        for h, page in self._table.items():
            if self._hash_of[page] != h:
                raise IntegrityError(f"block {page} is in the table under another hash")
        cached = set(self._table.values())
        if len(cached) != len(self._table):
            raise IntegrityError("a page is cached under two hashes")
        named = {page for page, h in enumerate(self._hash_of) if h is not None}
        if named != cached:
            raise IntegrityError(f"pages with a hash but no table entry: {sorted(named - cached)}")
        if any(count < 0 for count in self._ref):
            raise IntegrityError("a negative reference count")
        if any(count > 0 for page, count in enumerate(self._ref) if page not in cached):
            raise IntegrityError("an uncached page holds references")
        idle = {page for page in cached if self._ref[page] == 0}
        if set(self._lru) != idle:
            raise IntegrityError("the LRU queue is not exactly the unreferenced cached blocks")
        if self._locked_pages != len(cached) - len(idle):
            raise IntegrityError(f"locked count {self._locked_pages} != {len(cached) - len(idle)}")
        problem = self.allocator.check()
        if problem:
            raise IntegrityError(problem)
        check_partition(self.num_pages, self.allocator.free_list(), list(cached), held_pages)

    def to_dict(self) -> dict[str, Any]:
        blocks = [
            {"page": page, "hash": h, "ref": self._ref[page]} for h, page in self._table.items()
        ]
        return {
            "kind": "block_hash",
            "page_size": self.page_size,
            "num_pages": self.num_pages,
            "stats": asdict(self.stats()),
            "blocks": blocks,
        }

    def dump(self) -> str:
        lines = [
            f"block hash cache: page_size={self.page_size}, {self.num_pages} pages "
            f"({self.num_free_pages} free, {len(self._table)} cached, "
            f"{self._locked_pages} referenced)"
        ]
        for h, page in list(self._table.items())[:200]:
            lines.append(f"  {h & 0xFFFFFFFF:08x}.. -> page {page}, ref {self._ref[page]}")
        return "\n".join(lines)
