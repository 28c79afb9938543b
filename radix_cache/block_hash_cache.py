r"""A hash-per-block prefix cache (the vLLM design): `--prefix-cache block_hash`, to compare.

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
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import InsertResult, IntegrityError, MatchResult, PrefixCache, Recount
from .node import as_token_list

SEED_HASH = 0x5EED


@dataclass(slots=True, frozen=True, eq=False)
class BlockChain:
    pages: tuple[int, ...]
    hashes: tuple[int, ...]  # hashes[i] names the prefix ending with pages[i]


class BlockHashCache(PrefixCache):
    kind: ClassVar[str] = "block_hash"

    def __init__(self, num_pages: int, page_size: int = 1, policy: str = "lru") -> None:
        super().__init__(num_pages, page_size, policy)
        self.root = BlockChain((), ())
        self._table: dict[int, int] = {}  # block hash -> page
        self._hash_of: list[int | None] = [None] * num_pages
        self._ref = [0] * num_pages
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached pages at ref 0, oldest first

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
        self._check_insert_shape(len(tokens), len(pages))
        h, hashes, found = SEED_HASH, [], []
        for i in range(len(pages)):
            h = hash((h, tuple(tokens[i * ps : (i + 1) * ps])))
            hashes.append(h)
            found.append(self._table.get(h))
        # Only pages the caller hands over need checking; the rest are the cache's own.
        self._check_handed_over([m for m, theirs in zip(pages, found, strict=True) if m != theirs])
        cached_len = next((i for i, page in enumerate(found) if page is None), len(found)) * ps
        result = list(pages)
        duplicates, new_pages = [], []
        for i, (mine, theirs) in enumerate(zip(pages, found, strict=True)):
            if theirs is None:
                self._table[hashes[i]] = mine
                self._hash_of[mine] = hashes[i]
                new_pages.append(mine)
            elif theirs != mine:
                duplicates.append(mine)
                result[i] = theirs
        self._own(new_pages)
        self.num_nodes += len(new_pages)
        self._free_duplicates(duplicates)
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

    def _evict_next(self) -> list[int]:
        if not self._lru:
            return []
        page, _ = self._lru.popitem(last=False)
        del self._table[self._hash_of[page]]  # type: ignore[index]
        self._hash_of[page] = None
        self.num_nodes -= 1
        return [page]

    def _recount(self) -> Recount:
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
        return Recount(list(self._table.values()), len(cached) - len(idle), 1 + len(self._table))

    def to_dict(self) -> dict[str, Any]:
        blocks = [
            {"page": page, "hash": h, "ref": self._ref[page]} for h, page in self._table.items()
        ]
        return {**self._header(), "blocks": blocks}

    def dump(self) -> str:
        lines = [f"block hash cache: {self.summary()}"]
        for h, page in list(self._table.items())[:200]:
            lines.append(f"  {h & 0xFFFFFFFF:08x}.. -> page {page}, ref {self._ref[page]}")
        return "\n".join(lines)
