"""Random operation sequences against the brute-force reference, integrity checked every step.

Token sequences are built from a handful of page patterns, some differing from another only in
their last token, so sequences share prefixes often and diverge mid-page (a split must round down
to a page boundary). The pool is small, so allocations evict all the time.
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from radixserve.radix_cache import RadixCache
from radixserve.radix_cache.node import TreeNode
from tests.radix_cache.reference import Prefix, ReferenceCache, tree_snapshot

NUM_PAGES = 20
# (token, whether the page's last token is changed): page 3 differs from page 0 only at its end.
PAGE_KINDS = [(1, False), (2, False), (3, False), (1, True), (2, True)]
SEQUENCES = st.lists(st.sampled_from(range(len(PAGE_KINDS))), max_size=6)
TAILS = st.integers(0, 15)


class CacheMachine(RuleBasedStateMachine):
    page_size = 1
    policy = "lru"

    def __init__(self) -> None:
        super().__init__()
        self.cache = RadixCache(NUM_PAGES, self.page_size, self.policy)
        self.ref = ReferenceCache(NUM_PAGES, self.page_size)
        self.held: list[int] = []  # private pages: allocated, neither inserted nor freed yet
        self.locks: list[tuple[TreeNode, Prefix]] = []

    # --- helpers -------------------------------------------------------------------------------

    def tokens(self, kinds: list[int], tail: int) -> list[int]:
        out: list[int] = []
        for kind in kinds:
            token, changed = PAGE_KINDS[kind]
            page = [token] * self.page_size
            if changed:
                page[-1] = token + 10
            out += page
        return out + [5] * (tail % self.page_size)

    def checked_match(self, tokens: list[int]) -> tuple[TreeNode, Prefix, list[int]]:
        nodes = self.cache.num_nodes
        result = self.cache.match_prefix(tokens)
        event("match split an edge" if self.cache.num_nodes > nodes else "match without split")
        pages, cached_len = self.ref.match(tokens)
        assert (result.pages, result.cached_len) == (pages, cached_len)
        assert result.node.path_len() == cached_len
        return result.node, tuple(tokens[:cached_len]), result.pages

    def add_lock(self, node: TreeNode, prefix: Prefix) -> None:
        self.cache.lock(node)
        self.locks.append((node, prefix))
        if prefix:
            self.ref.locks[prefix] += 1

    def drop_lock(self, index: int) -> None:
        node, prefix = self.locks.pop(index)
        self.cache.unlock(node)
        if prefix:
            self.ref.locks[prefix] -= 1
            if not self.ref.locks[prefix]:
                del self.ref.locks[prefix]

    def checked_alloc(self, n: int) -> list[int] | None:
        before, free_before = tree_snapshot(self.cache), self.cache.num_free_pages
        available = free_before + sum(1 for p in self.ref.entries if not self.ref.lock_count(p))
        pages = self.cache.alloc_pages(n)
        after = tree_snapshot(self.cache)
        if n > available:
            assert pages is None, f"allocated {n} pages with only {available} available"
            assert after == before, "a failed allocation changed the tree"
            event("alloc out of pages")
            return None
        assert pages is not None and len(pages) == n == len(set(pages))
        freed = len(before) - len(after)
        event("alloc evicted" if freed else "alloc from the free list")
        if n <= free_before:
            assert freed == 0, "evicted although the free list was long enough"
        self.ref.check_eviction(after, max(n - free_before, 0), freed, self.policy)
        assert set(pages) <= self.ref.free
        self.ref.free -= set(pages)
        return pages

    def checked_insert(self, tokens: list[int], pages: list[int]) -> tuple[TreeNode, list[int]]:
        result = self.cache.insert(tokens, pages)
        cached_len, tree_pages, _ = self.ref.insert(tokens, pages)
        assert (result.cached_len, result.pages) == (cached_len, tree_pages)
        assert result.node.path_len() == len(tokens)
        return result.node, result.pages

    # --- rules ---------------------------------------------------------------------------------

    @rule(kinds=SEQUENCES, tail=TAILS)
    def match(self, kinds: list[int], tail: int) -> None:
        self.checked_match(self.tokens(kinds, tail))

    @rule(kinds=SEQUENCES, tail=TAILS)
    def lock_match(self, kinds: list[int], tail: int) -> None:
        node, prefix, _ = self.checked_match(self.tokens(kinds, tail))
        self.add_lock(node, prefix)

    @precondition(lambda self: self.locks)
    @rule(index=st.integers(0, 1000))
    def unlock(self, index: int) -> None:
        self.drop_lock(index % len(self.locks))

    @rule(n=st.integers(0, 8))
    def alloc(self, n: int) -> None:
        self.held += self.checked_alloc(n) or []

    @precondition(lambda self: self.held)
    @rule(n=st.integers(1, 8))
    def free(self, n: int) -> None:
        pages, self.held = self.held[:n], self.held[n:]
        self.cache.free_pages(pages)
        self.ref.free.update(pages)

    @rule(kinds=SEQUENCES, lock=st.booleans())
    def insert_private_pages(self, kinds: list[int], lock: bool) -> None:
        """An insert of freshly allocated pages: a second copy of a cached prefix is freed."""
        tokens = self.tokens(kinds, 0)
        need = len(tokens) // self.page_size
        if need > len(self.held):
            extra = self.checked_alloc(need - len(self.held))
            if extra is None:
                return
            self.held += extra
        mine, self.held = self.held[:need], self.held[need:]
        node, _ = self.checked_insert(tokens, mine)
        if lock:
            self.add_lock(node, tuple(tokens))

    @rule(kinds=SEQUENCES, tail=TAILS, keep=st.booleans())
    def request(self, kinds: list[int], tail: int, keep: bool) -> None:
        """The scheduler's flow: match, lock, allocate the rest, insert, relock, unlock."""
        tokens = self.tokens(kinds, tail)
        node, prefix, pages = self.checked_match(tokens)
        self.add_lock(node, prefix)
        aligned = len(tokens) - len(tokens) % self.page_size
        new = self.checked_alloc(aligned // self.page_size - len(pages))
        if new is None:
            self.drop_lock(len(self.locks) - 1)
            return
        table = pages + new
        free_before = set(self.ref.free)
        new_node, tree_pages = self.checked_insert(tokens[:aligned], table)
        assert tree_pages == table and self.ref.free == free_before, "the matched path changed"
        self.add_lock(new_node, tuple(tokens[:aligned]))
        self.drop_lock(len(self.locks) - 2)
        if not keep:
            self.drop_lock(len(self.locks) - 1)

    @rule(n=st.integers(-1, 12))
    def evict(self, n: int) -> None:
        before = len(self.ref.entries)
        freed = self.cache.evict(n)
        after = tree_snapshot(self.cache)
        assert freed == before - len(after)
        event(f"evict freed {min(freed, 3)}+ pages")
        if n <= 0:
            assert freed == 0
        self.ref.check_eviction(after, n, freed, self.policy)

    @rule()
    def flush(self) -> None:
        freed = self.cache.flush()
        after = tree_snapshot(self.cache)
        self.ref.check_eviction(after, NUM_PAGES, freed, self.policy)
        assert all(self.ref.lock_count(p) for p in after), "flush kept an unlocked prefix"

    @invariant()
    def consistent(self) -> None:
        self.cache.check_integrity(held_pages=self.held)
        assert tree_snapshot(self.cache) == self.ref.expected()
        assert set(self.cache.allocator.free_list()) == self.ref.free
        locked = sum(1 for p in self.ref.entries if self.ref.lock_count(p))
        assert self.cache.num_locked_pages == locked
        assert self.cache.num_cached_pages == len(self.ref.entries)
        assert self.cache.num_evictable_pages == len(self.ref.entries) - locked


def machine(page_size: int, policy: str) -> type[CacheMachine]:
    cls = type(f"Machine{page_size}{policy}", (CacheMachine,), {})
    cls.page_size, cls.policy = page_size, policy
    cls.TestCase.settings = settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return cls


TestPageSize1 = machine(1, "lru").TestCase
TestPageSize4 = machine(4, "lru").TestCase
TestPageSize16 = machine(16, "lru").TestCase
TestPageSize4LFU = machine(4, "lfu").TestCase
