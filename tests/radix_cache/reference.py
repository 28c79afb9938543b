"""A brute-force reference for the radix cache, and a per-page snapshot of a real tree.

The reference keeps one entry per cached page-aligned prefix (a tuple of tokens) with its page,
the clock of its last access and its match count; a lock is a multiset of locked prefixes. Every
query scans everything: slow, and obviously right.

Eviction order is not predicted node by node (the reference has no nodes); instead the reference
checks the cache's choice against what LRU over leaves guarantees (see `check_eviction`) and then
adopts it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from radixserve.radix_cache import RadixCache

Prefix = tuple[int, ...]


@dataclass(slots=True)
class PageState:
    page: int
    last_access: int
    hits: int
    lock_ref: int


def tree_snapshot(cache: RadixCache) -> dict[Prefix, PageState]:
    """prefix -> its last page's state, for every page in the tree (walks the whole tree)."""
    ps, out = cache.page_size, {}
    stack = [(child, ()) for child in cache.root.children.values()]
    while stack:
        node, above = stack.pop()
        for i, page in enumerate(node.pages):
            prefix = above + tuple(node.key[: (i + 1) * ps])
            out[prefix] = PageState(page, node.last_access, node.hits, node.lock_ref)
        path = above + tuple(node.key)
        stack.extend((child, path) for child in node.children.values())
    return out


@dataclass
class ReferenceCache:
    num_pages: int
    page_size: int
    entries: dict[Prefix, PageState] = field(default_factory=dict)
    locks: Counter[Prefix] = field(default_factory=Counter)
    free: set[int] = field(default_factory=set)
    clock: int = 0

    def __post_init__(self) -> None:
        self.free = set(range(self.num_pages))

    def prefixes(self, tokens: list[int]) -> list[Prefix]:
        ps = self.page_size
        return [tuple(tokens[: k * ps]) for k in range(1, len(tokens) // ps + 1)]

    def lock_count(self, prefix: Prefix) -> int:
        n = len(prefix)
        return sum(c for locked, c in self.locks.items() if locked[:n] == prefix)

    def match(self, tokens: list[int]) -> tuple[list[int], int]:
        self.clock += 1
        pages = []
        for prefix in self.prefixes(tokens):
            state = self.entries.get(prefix)
            if state is None:
                break
            state.last_access = self.clock
            state.hits += 1
            pages.append(state.page)
        return pages, len(pages) * self.page_size

    def insert(self, tokens: list[int], pages: list[int]) -> tuple[int, list[int], list[int]]:
        """(cached_len, the tree's pages after, the caller's pages freed as duplicates)."""
        self.clock += 1
        cached, result, duplicates = 0, [], []
        for prefix, mine in zip(self.prefixes(tokens), pages, strict=True):
            state = self.entries.get(prefix)
            if state is None:
                state = self.entries[prefix] = PageState(mine, self.clock, 0, 0)
            else:
                cached += self.page_size
                if state.page != mine:
                    duplicates.append(mine)
            state.last_access = self.clock
            result.append(state.page)
        self.free.update(duplicates)
        return cached, result, duplicates

    def expected(self) -> dict[Prefix, PageState]:
        """The snapshot the real tree must equal (lock counts filled in)."""
        return {
            p: PageState(s.page, s.last_access, s.hits, self.lock_count(p))
            for p, s in self.entries.items()
        }

    def unlocked(self) -> list[Prefix]:
        return [p for p in self.entries if self.lock_count(p) == 0]

    def check_eviction(
        self, after: dict[Prefix, PageState], asked: int, freed: int, order: str
    ) -> None:
        """Checks what the cache evicted against the reference's rules, then adopts it."""
        before = self.entries
        assert set(after) <= set(before), "eviction added prefixes"
        removed = [p for p in before if p not in after]
        assert freed == len(removed), f"reported {freed} pages freed, {len(removed)} removed"
        for p in removed:
            assert self.lock_count(p) == 0, f"evicted locked prefix of {len(p)} tokens"
        for p in after:
            assert p[: -self.page_size] in after or len(p) == self.page_size, "a hole in a path"
            assert after[p].page == before[p].page, "eviction moved a page"
        survivors = [p for p in self.unlocked() if p in after]
        assert freed >= asked or not survivors, "stopped evicting with evictable pages left"

        def key(p: Prefix) -> tuple[int, ...]:
            s = before[p]
            return (s.last_access,) if order == "lru" else (s.hits, s.last_access)

        if removed and survivors:
            newest_evicted = max(map(key, removed))
            oldest_kept = min(map(key, survivors))
            assert newest_evicted <= oldest_kept, (
                f"evicted a page with key {newest_evicted} but kept one with {oldest_kept}"
            )
        self.free.update(before[p].page for p in removed)
        self.entries = {p: s for p, s in before.items() if p in after}
