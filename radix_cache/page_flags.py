"""Per-page byte flags with bulk operations: O(1) Python steps per call, whatever its length.

A flag array is a bytearray (cheap single-page reads and writes, easy to corrupt on purpose in
tests) with a numpy view over the same memory. A long list of pages (page size 1 makes a
500-token insert 500 pages) is converted once, or comes as a numpy array already (a tree node
keeps one next to its list), and every check and write is one numpy operation; a short list
(page size 16: a few pages per call) stays in plain Python, where numpy's fixed cost per call
would dominate.

    flags  bytearray  [0 1 1 0 0 1 ...]      one byte per page
    view   ndarray    same buffer             view[ids] = 1   (one scatter)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BULK_MIN = 24  # pages from which one numpy write beats a Python loop (measured on the CPU)
# A list checked and moved in one call (bounds, state, duplicates, then the write: about ten
# numpy calls) pays numpy's fixed cost back only from about this many pages.
CHECK_LOOP_MAX = 64
PageIds = Any  # a list of ints or a 1-D int64 numpy array


def as_ids(pages: PageIds) -> np.ndarray:
    """The pages as an int64 array (no copy when they are one already)."""
    return np.asarray(pages, dtype=np.int64)


def is_bulk(pages: PageIds) -> bool:
    return isinstance(pages, np.ndarray) or len(pages) >= BULK_MIN


def join_pages(parts: list[PageIds]) -> PageIds:
    """One page list from several: a list when all are short lists, else one array."""
    if len(parts) == 1:
        return parts[0]
    kinds = {type(part) for part in parts}
    if kinds == {np.ndarray}:  # long leaves (eviction's usual case): one C call
        return np.concatenate(parts)
    if np.ndarray in kinds:
        return np.concatenate([as_ids(part) for part in parts])
    return [page for part in parts for page in part]


@dataclass(slots=True, frozen=True)
class Problem:
    kind: str  # "outside" the range, a wrong "flag", or a page listed "twice"
    page: int
    flag: int = -1  # the page's flag, for kind "flag"


class PageFlags:
    """One byte per page in 0..num_pages-1, read and written by the list."""

    __slots__ = ("bytes", "view", "_mark", "_iota", "num_pages")

    def __init__(self, num_pages: int, value: int = 0) -> None:
        self.num_pages = num_pages
        self.bytes = bytearray(bytes([value])) * num_pages
        self.view = np.frombuffer(self.bytes, dtype=np.uint8)
        # For the duplicate check: mark[page] = position in the call; a repeated page keeps only
        # its last position, so some position reads back another's.
        self._mark = np.zeros(num_pages, dtype=np.int64)
        self._iota = np.arange(num_pages, dtype=np.int64)

    def set(self, pages: PageIds, value: int) -> None:
        """flags[page] = value for every page (ids trusted: checked before)."""
        if is_bulk(pages):
            self.view[as_ids(pages)] = value
        else:
            flags = self.bytes
            for page in pages:
                flags[page] = value

    def count(self, value: int) -> int:
        return self.bytes.count(value)

    def pages_with(self, value: int) -> list[int]:
        return np.flatnonzero(self.view == value).tolist()

    def problem(self, pages: PageIds, allowed: int) -> Problem | None:
        """The first reason `pages` are not distinct, in range and all flagged `allowed`, or
        None when they are."""
        return self.move(pages, allowed, None)

    def move(
        self, pages: PageIds, allowed: int, value: int | None, own: bool = False
    ) -> Problem | None:
        """Checks like `problem`; when the pages pass and `value` is not None, flags them all
        `value` (one conversion of the list for both). A failed check changes nothing.

        `own`: the pages come from the owner's own structure (a cache's evicted nodes), whose
        range and distinctness `check_integrity` proves; only their flags are checked then."""
        if type(pages) is list and len(pages) < CHECK_LOOP_MAX:  # a short call, inline
            flags, n = self.bytes, self.num_pages
            for page in pages:
                if not 0 <= page < n or flags[page] != allowed:
                    return self._small_problem(pages, allowed)
            if len(pages) > 1 and len(set(pages)) != len(pages):
                return self._small_problem(pages, allowed)
            if value is not None:
                for page in pages:
                    flags[page] = value
            return None
        if len(pages) == 0:
            return None
        if not is_bulk(pages):  # a short tuple or range
            problem = self._small_problem(pages, allowed)
            if problem is None and value is not None:
                flags = self.bytes
                for page in pages:
                    flags[page] = value
            return problem
        ids = as_ids(pages)
        if own:
            if (self.view[ids] != allowed).any():
                return self._small_problem(ids.tolist(), allowed)
            if value is not None:
                self.view[ids] = value
            return None
        if ids.min() < 0 or ids.max() >= self.num_pages:
            bad = ids[(ids < 0) | (ids >= self.num_pages)][0]
            return Problem("outside", int(bad))
        flags = self.view[ids]
        wrong = flags != allowed
        if wrong.any():
            index = int(np.flatnonzero(wrong)[0])
            return Problem("flag", int(ids[index]), int(flags[index]))
        iota = self._iota[: len(ids)]
        self._mark[ids] = iota
        repeated = self._mark[ids] != iota
        if repeated.any():
            return Problem("twice", int(ids[int(np.flatnonzero(repeated)[0])]))
        if value is not None:
            self.view[ids] = value
        return None

    def _small_problem(self, pages: Sequence[int], allowed: int) -> Problem | None:
        flags, n = self.bytes, self.num_pages
        for page in pages:
            if not 0 <= page < n:
                return Problem("outside", page)
            if flags[page] != allowed:
                return Problem("flag", page, flags[page])
        if len(set(pages)) != len(pages):
            seen: set[int] = set()
            for page in pages:
                if page in seen:
                    return Problem("twice", page)
                seen.add(page)
        return None
