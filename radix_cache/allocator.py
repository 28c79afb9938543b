"""The free list of KV pages."""

from __future__ import annotations

from collections.abc import Iterable


class PageAllocator:
    def __init__(self, num_pages: int) -> None:
        if num_pages < 1:
            raise ValueError(f"a page pool needs at least one page, got {num_pages}")
        self.num_pages = num_pages
        # Popping from the end hands out low page ids first, which keeps test output readable.
        self._free = list(range(num_pages - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self, n: int) -> list[int]:
        if n > len(self._free):
            raise ValueError(f"asked for {n} pages, {len(self._free)} free")
        if n <= 0:
            return []
        pages = self._free[-n:]
        del self._free[-n:]
        pages.reverse()
        return pages

    def free(self, pages: Iterable[int]) -> None:
        self._free.extend(pages)

    def free_list(self) -> list[int]:
        return list(self._free)
