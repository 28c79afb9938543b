r"""A node of the radix tree: an edge of token ids and the KV pages that hold them.

    root --[t0..t31 | p7 p2]--> A --[t32..t47 | p9]--> B        (page_size 16)
                                  \--[u32..u63 | p4 p5]--> C

A node's `key` is the edge into it (never empty below the root) and `pages[i]` holds the KV of
key[i*page_size : (i+1)*page_size], so len(key) == len(pages) * page_size always. Children are
keyed by the first page of their edge (a tuple of page_size tokens, or the bare token when
page_size is 1), so following a path costs one dict probe per edge, and two children never share
a first page, which is what makes a page-aligned split always possible.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)  # 0 is left for roots, which makes dumps easy to read


@dataclass(slots=True, eq=False)
class TreeNode:
    key: list[int]  # the edge's token ids
    pages: list[int]  # one KV page per page_size tokens of `key`
    parent: TreeNode | None  # None for the root, and for a node once it has been evicted
    last_access: int = 0  # the cache clock at the last match/insert through this node
    lock_ref: int = 0  # requests whose locked path runs through this node
    hits: int = 0  # matches through this node (the LFU policy's count)
    priority: int = 0  # free for a policy object's own key (tests pin paths with it); kept on split
    children: dict[Any, TreeNode] = field(default_factory=dict)
    node_id: int = field(default_factory=lambda: next(_ids))
    # `pages` as an int64 numpy array, kept for long edges (page_flags.BULK_MIN pages or more) so
    # that evicting them is one bulk operation; None for short ones. Always equal to `pages`.
    page_array: Any = None
    # The hierarchical cache's (hicache.py): the node's copy in the host pool (None: none), and
    # the load-back in flight into its device pages (None: none). A node on the host only has
    # `pages == []`; every other cache leaves both None.
    host_pages: list[int] | None = None
    loading: Any = None

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def is_root(self) -> bool:
        return self.node_id == 0

    def path_len(self) -> int:
        """Tokens from the root to the end of this node (walks up: for tests and dumps)."""
        total, node = 0, self
        while node is not None:
            total += len(node.key)
            node = node.parent
        return total

    def __repr__(self) -> str:
        return (
            f"TreeNode(id={self.node_id}, tokens={len(self.key)}, pages={len(self.pages)}, "
            f"lock_ref={self.lock_ref}, last_access={self.last_access})"
        )


def new_root() -> TreeNode:
    return TreeNode(key=[], pages=[], parent=None, node_id=0)


def as_token_list(token_ids: Sequence[int]) -> list[int]:
    """Edges are lists, and list == tuple is False: normalise once, without copying a list."""
    if type(token_ids) is list:
        return token_ids
    tolist = getattr(token_ids, "tolist", None)  # numpy arrays: plain ints, not numpy scalars
    return tolist() if tolist is not None else list(token_ids)


def child_key(tokens: Sequence[int], start: int, page_size: int) -> Any:
    """The dict key of the child whose edge starts at tokens[start]: its first page."""
    return tokens[start] if page_size == 1 else tuple(tokens[start : start + page_size])


def aligned_common_prefix(edge: list[int], tokens: list[int], start: int, end: int, ps: int) -> int:
    """Length of the common prefix of `edge` and tokens[start:end], in whole pages of `ps`.
    `len(edge)` and `end - start` are page multiples (the tree's edges and aligned queries).

    The usual case (the whole edge matches) is one slice comparison in C. Otherwise a binary
    search narrows down the first differing page, comparing only the not yet known segment each
    time, so a long edge costs about two passes over it and never a Python loop per token:

        pages:  [ 0 .. lo )  known equal   [ lo .. mid )  compared now   [ mid .. hi ]  unknown
    """
    limit = min(len(edge), end - start)
    if limit == len(edge):
        if tokens[start : start + limit] == edge:
            return limit
    elif tokens[start : start + limit] == edge[:limit]:
        return limit
    # In pages: [0, lo) are equal and the answer is in [lo, hi]; some page below limit // ps
    # differs (the comparison above failed), so the answer is at most one less.
    lo, hi = 0, limit // ps - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        a, b = lo * ps, mid * ps
        if tokens[start + a : start + b] == edge[a:b]:
            lo = mid
        else:
            hi = mid - 1
    return lo * ps
