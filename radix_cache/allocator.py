"""The free list of KV pages, with a state byte per page, so a double free or a page handed to
the cache twice is caught where it happens.

Every page is in exactly one state, kept by the allocator for whoever owns the pool:

    FREE    on the free list
    HELD    handed out by `alloc`, owned privately by a request
    CACHED  taken by the cache (`take`), until it releases it (`release`)

Each transition checks every page of the call (in range, distinct, in the expected state) before it
changes anything, as a constant number of bulk operations (page_flags.py), so a call costs the
same few Python steps for one page or a thousand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .interning import IntObjects
from .page_flags import BULK_MIN, PageFlags, PageIds, Problem

HELD, FREE, CACHED = 0, 1, 2
STATE_NAMES = {HELD: "held", FREE: "free", CACHED: "cached"}


class PageAllocator:
    """A stack of free page ids (a numpy array and its top) plus `state[page]` (PageFlags)."""

    __slots__ = ("num_pages", "_stack", "_top", "state", "holder", "_id_objects")

    def __init__(self, num_pages: int, holder: str = "cache") -> None:
        if num_pages < 1:
            raise ValueError(f"a page pool needs at least one page, got {num_pages}")
        self.num_pages = num_pages
        self.holder = holder  # how error messages name the owner of CACHED pages
        # Popping from the top hands out low page ids first, which keeps test output readable.
        self._stack = np.arange(num_pages - 1, -1, -1, dtype=np.int64)
        self._top = num_pages  # _stack[:_top] is the free list
        self.state = PageFlags(num_pages, FREE)
        # A bulk alloc hands out the page ids as ints made once (interning.py), so the page
        # lists a tree node keeps free no ints when it is evicted. 36 bytes a page.
        self._id_objects = IntObjects(num_pages)

    @property
    def num_free(self) -> int:
        return self._top

    def alloc(self, n: int) -> list[int]:
        """`n` pages off the free list; ValueError if there are fewer (callers evict first)."""
        if n < 0 or n > self._top:
            raise ValueError(f"asked for {n} pages, {self._top} free")
        if n == 0:
            return []
        top = self._top
        self._top = top - n
        if n >= BULK_MIN:
            ids = self._stack[top - n : top][::-1]
            self.state.view[ids] = HELD
            return self._id_objects.of(ids)
        pages = self._stack[top - n : top].tolist()
        pages.reverse()
        flags = self.state.bytes
        for page in pages:
            flags[page] = HELD
        return pages

    def free(self, pages: PageIds, what: str = "free") -> None:
        """Puts held pages back; ValueError (and no change at all) on a bad, free or cached id."""
        pages = pages if type(pages) is list or isinstance(pages, np.ndarray) else list(pages)
        self._move(pages, HELD, FREE, what)
        self._push(pages)

    def take(self, pages: PageIds, what: str = "insert") -> None:
        """Held pages become the cache's; ValueError (and no change) unless all are held."""
        self._move(pages, HELD, CACHED, what)

    def release(self, pages: PageIds) -> None:
        """The cache's pages go back to the free list (evicted or released)."""
        if type(pages) is np.ndarray and len(pages) >= BULK_MIN:
            # Eviction's usual call (a batch of long leaves, joined into one array): these pages
            # are the tree's own, so they are in range, distinct and CACHED; that is the tree's
            # invariant, which check_integrity proves, not a caller's input to validate. One
            # scatter and one slice write, as the tensor-based trees free pages.
            self.state.view[pages] = FREE
            top = self._top
            self._stack[top : top + len(pages)] = pages
            self._top = top + len(pages)
            return
        problem = self.state.move(pages, CACHED, FREE, own=True)
        if problem is not None:
            raise ValueError(self._describe(problem, CACHED, "release"))
        self._push(pages)

    def _push(self, pages: PageIds) -> None:
        n, top = len(pages), self._top
        if n < 8 and type(pages) is list:  # a few pages: item writes cost less than a slice
            stack = self._stack
            for page in pages:
                stack[top] = page
                top += 1
        else:
            self._stack[top : top + n] = pages
            top += n
        self._top = top

    def check(self, pages: PageIds, expected: int, what: str) -> None:
        """ValueError unless `pages` are distinct, in range and all in state `expected`."""
        self._move(pages, expected, None, what)

    def _move(self, pages: PageIds, expected: int, value: int | None, what: str) -> None:
        problem = self.state.move(pages, expected, value)
        if problem is not None:
            raise ValueError(self._describe(problem, expected, what))

    def check_not_free(self, pages: Sequence[int], what: str) -> None:
        """ValueError unless `pages` are distinct, in range and held (the caller's own pages)."""
        self.check(pages, HELD, what)

    def _describe(self, problem: Problem, expected: int, what: str) -> str:
        page = problem.page
        if problem.kind == "outside":
            return f"{what} was given page {page}, outside the pool of {self.num_pages}"
        if problem.kind == "twice":
            return f"{what} was given the same page twice (page {page})"
        if problem.flag == FREE:
            return f"{what} was given page {page}, which is already free (on the free list)"
        if problem.flag == CACHED:
            fix = ": unlock it instead" if what == "free_pages" else " for other tokens"
            return f"{what} was given page {page}, which the {self.holder} owns{fix}"
        wanted = STATE_NAMES[expected]
        return f"{what} was given page {page}, which a request holds (expected {wanted})"

    def is_free(self, page: int) -> bool:
        return self.state.bytes[page] == FREE

    def is_cached(self, page: int) -> bool:
        return self.state.bytes[page] == CACHED

    def cached_pages(self) -> list[int]:
        return self.state.pages_with(CACHED)

    def free_list(self) -> list[int]:
        return self._stack[: self._top].tolist()

    def problem(self) -> str | None:
        """A description of the first inconsistency between the list and the flags, or None."""
        free = self.free_list()
        if len(set(free)) != len(free):
            return "a page is on the free list twice"
        flagged = self.state.count(FREE)
        if flagged != len(free):
            return f"{flagged} pages flagged free but {len(free)} on the list"
        for page in free:
            if not 0 <= page < self.num_pages or self.state.bytes[page] != FREE:
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
