"""The two-tier (hierarchical) radix cache under random operation sequences.

The mover (host_tier.RecordingMover) keeps every page's content as a value: a request writes into
each page it computes the prefix that page ends (a tuple of tokens), and copies between the tiers
move those values. So after any sequence of inserts, evictions to the host, host evictions,
load-backs in flight, aborted loads and flushes, every page of every tier must still hold exactly
the prefix its node says, which is what the reference checks after each step, together with
`check_integrity` (both tiers' page partitions, locks, heaps).

The reference model is the set of inserted sequences: a match (device part plus host part) must
be a page-aligned prefix of one of them, and with a host tier large enough to never drop anything
(`BIG_HOST`), every inserted sequence must still match in full (nothing evicted is lost).
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from radixserve.radix_cache.hicache import HierarchicalRadixCache, LoadTicket
from radixserve.radix_cache.host_tier import RecordingMover
from radixserve.radix_cache.inspection import iter_nodes
from radixserve.radix_cache.node import TreeNode

NUM_PAGES = 12
SEQUENCES = st.lists(st.sampled_from([1, 2, 3, 4]), min_size=1, max_size=8)


class TwoTierMachine(RuleBasedStateMachine):
    page_size = 1
    host_pages = 10
    write_policy = "write_back"
    lossless = False  # the host tier never drops anything (checked by `nothing_is_lost`)

    def __init__(self) -> None:
        super().__init__()
        self.mover = RecordingMover(defer_loads=True)
        self.cache = HierarchicalRadixCache(
            NUM_PAGES,
            self.page_size,
            host_pages=self.host_pages,
            mover=self.mover,
            write_policy=self.write_policy,
        )
        self.inserted: set[tuple[int, ...]] = set()
        self.loads: list[tuple[LoadTicket, list[int]]] = []
        self.held: list[int] = []

    def tokens(self, pages: list[int]) -> list[int]:
        return [t for p in pages for t in [p] * self.page_size]

    def content(self, tokens: list[int], page: int) -> tuple[int, ...]:
        return tuple(tokens[: (page + 1) * self.page_size])

    @rule(seq=SEQUENCES)
    def compute(self, seq: list[int]) -> None:
        self.compute_tokens(self.tokens(seq))

    def compute_tokens(self, tokens: list[int]) -> None:
        """A request's whole life: match, lock, compute the rest, insert, unlock."""
        tokens = tokens[: len(tokens) // self.page_size * self.page_size]
        if not tokens:
            return
        match = self.cache.match_prefix(tokens)
        self.cache.lock(match.node)
        need = len(tokens) // self.page_size - len(match.pages)
        pages = self.cache.alloc_pages(need)
        if pages is None:
            event("compute: out of device pages")
            self.cache.unlock(match.node)
            return
        table = match.pages + pages
        for i, page in enumerate(pages, start=len(match.pages)):
            self.mover.device[page] = self.content(tokens, i)
        if match.host_len:
            event("compute over host-resident KV (adopted)")
        result = self.cache.insert(tokens, table)
        self.cache.lock(result.node)
        self.cache.unlock(match.node)
        self.cache.unlock(result.node)
        self.inserted.add(tuple(tokens))

    def known(self, data: st.DataObject) -> list[int]:
        """An inserted sequence (the likeliest to reach host-resident KV), cut or extended."""
        seq = list(data.draw(st.sampled_from(sorted(self.inserted))))
        cut = data.draw(st.integers(1, len(seq)))
        return seq[:cut] + self.tokens(data.draw(st.lists(st.sampled_from([1, 2]), max_size=3)))

    @precondition(lambda self: self.inserted)
    @rule(data=st.data())
    def load_known(self, data: st.DataObject) -> None:
        self.load(self.known(data))

    @precondition(lambda self: self.inserted)
    @rule(data=st.data())
    def compute_known(self, data: st.DataObject) -> None:
        self.compute_tokens(self.known(data))

    @rule(seq=SEQUENCES)
    def start_load(self, seq: list[int]) -> None:
        self.load(self.tokens(seq))

    def load(self, tokens: list[int]) -> None:
        tokens = tokens[: len(tokens) // self.page_size * self.page_size]
        match = self.cache.match_prefix(tokens)
        self.check_prefix(tokens, match.cached_len + match.host_len)
        if not match.host_len:
            return
        ticket = self.cache.load_back(match)
        event("load started" if ticket else "load refused: no device room")
        if ticket is not None:
            self.loads.append((ticket, tokens))

    @precondition(lambda self: self.loads)
    @rule(data=st.data())
    def abort_load(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.loads) - 1))
        ticket, _ = self.loads.pop(index)
        self.cache.unlock(ticket.node)  # the caller goes; the copy still lands later

    @rule()
    def finish_loads(self) -> None:
        self.mover.finish_all()
        self.cache.poll_loads()
        for ticket, tokens in self.loads:
            assert ticket.done()
            match = self.cache.match_prefix(tokens)
            assert match.host_len == 0 or match.cached_len >= ticket.node.path_len()
            for i, page in enumerate(match.pages):
                assert self.mover.device[page] == self.content(tokens, i)
            self.cache.unlock(ticket.node)
            event("load finished and admitted")
        self.loads.clear()

    @rule(n=st.integers(1, NUM_PAGES))
    def hold(self, n: int) -> None:
        pages = self.cache.alloc_pages(n)
        if pages is not None:
            self.held += pages

    @precondition(lambda self: self.held)
    @rule()
    def release_held(self) -> None:
        self.cache.free_pages(self.held)
        self.held = []

    @rule()
    def flush(self) -> None:
        self.finish_loads()
        self.cache.flush()
        assert self.cache.num_cached_pages == 0 and self.cache.num_host_cached_pages == 0
        self.inserted.clear()

    def check_prefix(self, tokens: list[int], length: int) -> None:
        if length:
            assert any(tuple(tokens[:length]) == seq[:length] for seq in self.inserted)

    @invariant()
    def integrity(self) -> None:
        self.cache.check_integrity(held_pages=self.held)

    @invariant()
    def every_page_holds_its_prefix(self) -> None:
        paths: dict[int, tuple[int, ...]] = {self.cache.root.node_id: ()}
        for node in iter_nodes(self.cache.root):
            parent = node.parent
            assert isinstance(parent, TreeNode)
            path = paths[parent.node_id] + tuple(node.key)
            paths[node.node_id] = path
            above = len(path) - len(node.key)
            for i, page in enumerate(node.host_pages or []):
                assert self.mover.host[page] == path[: above + (i + 1) * self.page_size]
            if node.loading is None:
                for i, page in enumerate(node.pages):
                    assert self.mover.device[page] == path[: above + (i + 1) * self.page_size]

    @invariant()
    def the_view_names_each_nodes_tier(self) -> None:
        view = self.cache.to_dict()
        tiers = {entry.get("tier") for entry in view["nodes"][1:]}
        assert tiers <= {"device", "host", "both"}
        stats = view["stats"]
        assert stats["host_cached_tokens"] == sum(
            len(entry["host_pages"]) * self.page_size for entry in view["nodes"][1:]
        )

    @invariant()
    def nothing_is_lost(self) -> None:
        if not self.lossless:
            return
        for seq in self.inserted:
            match = self.cache.match_prefix(list(seq))
            assert match.cached_len + match.host_len == len(seq)


class BigHostMachine(TwoTierMachine):
    host_pages = 400
    lossless = True


class WriteThroughMachine(TwoTierMachine):
    write_policy = "write_through"


class PagedMachine(TwoTierMachine):
    page_size = 2
    host_pages = 8


SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTwoTier = TwoTierMachine.TestCase
TestTwoTier.settings = SETTINGS
TestBigHost = BigHostMachine.TestCase
TestBigHost.settings = SETTINGS
TestWriteThrough = WriteThroughMachine.TestCase
TestWriteThrough.settings = SETTINGS
TestPaged = PagedMachine.TestCase
TestPaged.settings = SETTINGS
