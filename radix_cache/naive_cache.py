"""A cache that shares nothing: the `--disable-radix-cache` mode.

Same interface, so the scheduler runs unchanged: a match never finds anything, the scheduler
keeps every page private (it is told the cache does not share), and `insert` takes nothing in.
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

_ROOT = object()


class NaiveCache(PrefixCache):
    shares_prefixes = False

    def __init__(self, num_pages: int, page_size: int = 1) -> None:
        self.num_pages = num_pages
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages)
        self.queried_tokens = 0

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        self.queried_tokens += len(token_ids)
        return MatchResult([], 0, _ROOT)

    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        """Caches nothing: the caller's pages stay the caller's (it frees them when done)."""
        return InsertResult(0, list(pages), _ROOT)

    def lock(self, node: Any) -> None:
        pass

    def unlock(self, node: Any) -> None:
        pass

    def alloc_pages(self, num_pages: int) -> list[int] | None:
        if num_pages > self.allocator.num_free:
            return None
        return self.allocator.alloc(num_pages)

    def free_pages(self, pages: Iterable[int]) -> None:
        self.allocator.free(pages)

    def evict(self, num_pages: int) -> int:
        return 0

    def flush(self) -> int:
        return 0

    @property
    def num_free_pages(self) -> int:
        return self.allocator.num_free

    @property
    def num_cached_pages(self) -> int:
        return 0

    @property
    def num_locked_pages(self) -> int:
        return 0

    def stats(self) -> CacheStats:
        return CacheStats(
            self.num_pages, self.num_free_pages, 0, 0, 0, 0, self.queried_tokens, 0, 1
        )

    def check_integrity(self, held_pages: Iterable[int] | None = None) -> None:
        free = self.allocator.free_list()
        held = list(held_pages) if held_pages is not None else []
        together = free + held
        if len(set(together)) != len(together):
            raise IntegrityError("a page is both free and held, or listed twice")
        if held_pages is not None and len(together) != self.num_pages:
            raise IntegrityError(f"free + held = {len(together)} of {self.num_pages} pages")

    def to_dict(self) -> dict[str, Any]:
        return {"page_size": self.page_size, "root": None}

    def dump(self) -> str:
        return "naive cache (no sharing)"
