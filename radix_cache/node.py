r"""A node of the radix tree: an edge of token ids and the KV pages that hold them.

    root --[t0..t31 | p7 p2]--> A --[t32..t47 | p9]--> B        (page_size 16)
                                  \--[u32..u63 | p4 p5]--> C

Children are keyed by the first page of their edge (a tuple of page_size tokens, or the single
token when page_size is 1), so a lookup is one dict probe per edge.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

_ids = itertools.count()


class TreeNode:
    __slots__ = (
        "key",
        "pages",
        "children",
        "parent",
        "lock_ref",
        "last_access",
        "hits",
        "priority",
        "node_id",
    )

    def __init__(
        self, key: list[int], pages: list[int], parent: TreeNode | None, last_access: int
    ) -> None:
        self.key = key
        self.pages = pages
        self.children: dict[Any, TreeNode] = {}
        self.parent = parent
        self.lock_ref = 0
        self.last_access = last_access
        self.hits = 0
        self.priority = 0
        self.node_id = next(_ids)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def __repr__(self) -> str:
        return f"TreeNode(id={self.node_id}, tokens={len(self.key)}, lock={self.lock_ref})"


def child_key(tokens: Sequence[int], start: int, page_size: int) -> Any:
    return tokens[start] if page_size == 1 else tuple(tokens[start : start + page_size])


def aligned_common_prefix(
    edge: list[int], tokens: Sequence[int], start: int, page_size: int
) -> int:
    """Length of the common prefix of `edge` and tokens[start:], rounded down to whole pages.

    The whole-edge case is one slice comparison; otherwise a binary search over slice equality
    (each comparison runs in C), so long edges never cost a Python loop per token.
    """
    limit = min(len(edge), len(tokens) - start)
    if tokens[start : start + limit] == edge[:limit]:
        return limit // page_size * page_size
    lo, hi = 0, limit // page_size  # in pages: lo pages are known equal, hi is an upper bound
    while lo < hi:
        mid = (lo + hi + 1) // 2
        end = mid * page_size
        if tokens[start : start + end] == edge[:end]:
            lo = mid
        else:
            hi = mid - 1
    return lo * page_size
