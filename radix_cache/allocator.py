"""The free list of KV pages, with a per-page flag so a double free is caught where it happens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class PageAllocator:
    """A stack of free page ids plus `is_free[page]` (a bytearray: one byte per page).

    The flag costs one byte per page and turns the two classic bookkeeping bugs (freeing a page
    twice, freeing an id outside the pool) into an immediate ValueError instead of a corrupted
    free list discovered much later.
    """

    __slots__ = ("num_pages", "_free", "_is_free")

    def __init__(self, num_pages: int) -> None:
        if num_pages < 1:
            raise ValueError(f"a page pool needs at least one page, got {num_pages}")
        self.num_pages = num_pages
        # Popping from the end hands out low page ids first, which keeps test output readable.
        self._free = list(range(num_pages - 1, -1, -1))
        self._is_free = bytearray(b"\x01") * num_pages

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self, n: int) -> list[int]:
        """`n` pages off the free list; ValueError if there are fewer (callers evict first)."""
        if n < 0 or n > len(self._free):
            raise ValueError(f"asked for {n} pages, {len(self._free)} free")
        if n == 0:
            return []
        pages = self._free[-n:]
        del self._free[-n:]
        pages.reverse()
        is_free = self._is_free
        for page in pages:
            is_free[page] = 0
        return pages

    def free(self, pages: Iterable[int]) -> None:
        """Puts pages back; ValueError (and no change at all) on a bad or already free id."""
        pages = list(pages)
        is_free = self._is_free
        for i, page in enumerate(pages):
            if not 0 <= page < self.num_pages or is_free[page]:
                for undo in pages[:i]:
                    is_free[undo] = 0
                what = "outside the pool" if not 0 <= page < self.num_pages else "already free"
                raise ValueError(f"cannot free page {page}: {what} (pool of {self.num_pages})")
            is_free[page] = 1
        self._free.extend(pages)

    def check_not_free(self, pages: Sequence[int], what: str) -> None:
        """ValueError unless `pages` are distinct, in range and not free: pages someone holds."""
        if pages and (min(pages) < 0 or max(pages) >= self.num_pages):
            raise ValueError(f"{what} was given a page outside the pool of {self.num_pages}")
        if any(map(self._is_free.__getitem__, pages)):
            raise ValueError(f"{what} was given a page that is on the free list")
        if len(set(pages)) != len(pages):
            raise ValueError(f"{what} was given the same page twice")

    def is_free(self, page: int) -> bool:
        return bool(self._is_free[page])

    def free_list(self) -> list[int]:
        return list(self._free)

    def check(self) -> str | None:
        """A description of the first inconsistency between the list and the flags, or None."""
        if len(set(self._free)) != len(self._free):
            return "a page is on the free list twice"
        if sum(self._is_free) != len(self._free):
            return f"{sum(self._is_free)} pages flagged free but {len(self._free)} on the list"
        for page in self._free:
            if not 0 <= page < self.num_pages or not self._is_free[page]:
                return f"free-list page {page} is out of range or not flagged free"
        return None


def partition_problem(
    num_pages: int, free: list[int], cached: list[int], held: list[int] | None
) -> str | None:
    """A description of the first way free, cached and held pages fail to be in range and
    pairwise disjoint (and, with `held` given, to make up exactly the pool), or None."""
    places = {"free": free, "cached": cached}
    if held is not None:
        places["held"] = held
    seen: dict[int, str] = {}
    for place, pages in places.items():
        for page in pages:
            if not 0 <= page < num_pages:
                return f"page {page} ({place}) is outside the pool of {num_pages}"
            if page in seen:
                return f"page {page} is both {seen[page]} and {place}"
            seen[page] = place
    if held is not None and len(seen) != num_pages:
        missing = sorted(set(range(num_pages)) - set(seen))
        return (
            f"free + cached + held = {len(seen)} of {num_pages} pages; "
            f"lost {len(missing)}, e.g. {missing[:8]}"
        )
    return None
