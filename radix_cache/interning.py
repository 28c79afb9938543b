"""Small non-negative ints as Python objects made once, handed out by reference.

A Python list of ids holds one int object per element, and every id above 256 is an object of its
own: dropping a tree node at page size 1 frees as many ints as its edge has tokens and pages, which
was most of the cost of evicting it. Lists built through an `IntObjects` table reference the
table's objects instead (one C loop of increfs), so dropping them only decrefs; a tree of a
million tokens also stops holding a million 28-byte ints of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GROWTH_LIMIT = 1 << 22  # larger ids are left as they are: a table up to 4M ids (~150 MB) at most


class IntObjects:
    """`of(ids)`: the list of `ids` whose elements are the table's own int objects."""

    __slots__ = ("_objects",)

    def __init__(self, size: int = 0) -> None:
        self._objects = np.array(range(size), dtype=object)

    def of(self, ids: np.ndarray) -> list[int]:
        """`ids` (int64, in range) as a list of the table's objects."""
        return self._objects[ids].tolist()

    def intern(self, values: Sequence[int]) -> list[int]:
        """`values` with the table's objects for every element, the table grown to cover them;
        the values unchanged (as a list) when one is negative or beyond GROWTH_LIMIT."""
        ids = np.asarray(values, dtype=np.int64)
        if len(ids) == 0:
            return []
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= GROWTH_LIMIT:
            return list(values)
        size = len(self._objects)
        if high >= size:
            grown = max(2 * size, high + 1, 1024)
            self._objects = np.concatenate(
                [self._objects, np.array(range(size, grown), dtype=object)]
            )
        return self._objects[ids].tolist()
