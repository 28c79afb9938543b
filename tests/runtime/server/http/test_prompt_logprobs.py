"""PromptLogprobCache against a brute-force reference: what it returns is right, and it returns
as much as whole blocks of the stored prompts allow."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.runtime.server.http.openai_logprobs import TokenLogprob
from radixserve.runtime.server.http.prompt_logprobs import PromptLogprobCache
from radixserve.runtime.server.output import LogprobEntry

PAGE = 4  # blocks of 16 tokens: 4 pages of 4


def entries_of(ids: list[int], top_k: int) -> list[TokenLogprob]:
    """Made-up logprobs that, like real ones, depend only on the prefix up to each token."""
    out = [TokenLogprob(ids[0], None, None)]
    for i in range(1, len(ids)):
        value = -(hash(tuple(ids[: i + 1])) % 1000) / 100
        top: list[LogprobEntry] = [(value + 0.5 - j, ids[i] + j, None) for j in range(top_k)]
        out.append(TokenLogprob(ids[i], value, top or None))
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def expected_known(ids: list[int], stored: list[list[int]], block: int) -> int:
    """1 + block * (the most whole blocks some stored prompt shares with `ids`)."""
    best = 0
    for s in stored:
        shared = min(common_prefix(ids, s), len(s))
        best = max(best, (shared - 1) // block if shared else 0)
    return 1 + block * best if ids else 0


def check_entries(found: list[TokenLogprob], ids: list[int], top_k: int) -> None:
    reference = entries_of(ids, top_k)[: len(found)]
    for got, want in zip(found, reference, strict=True):
        assert (got.token_id, got.logprob) == (want.token_id, want.logprob)
        assert (got.top or [])[:top_k] == (want.top or [])[:top_k]


prompts = st.lists(st.integers(0, 2), min_size=1, max_size=70)  # a tiny alphabet shares prefixes


@settings(max_examples=150, deadline=None)
@given(stored=st.lists(prompts, max_size=6), queries=st.lists(prompts, min_size=1, max_size=6))
def test_lookup_returns_the_longest_stored_whole_block_prefix(
    stored: list[list[int]], queries: list[list[int]]
) -> None:
    cache = PromptLogprobCache(capacity_values=10**9, page_size=PAGE)
    for ids in stored:
        cache.store(ids, entries_of(ids, 1), 1)
    for ids in queries:
        found = cache.lookup(ids, 1)
        assert len(found) == expected_known(ids, stored, cache.block_tokens)
        check_entries(found, ids, 1)


@settings(max_examples=100, deadline=None)
@given(stored=st.lists(prompts, min_size=1, max_size=8), capacity=st.integers(0, 200))
def test_a_full_cache_stays_within_capacity_and_answers_correctly(
    stored: list[list[int]], capacity: int
) -> None:
    cache = PromptLogprobCache(capacity_values=capacity, page_size=PAGE)
    for ids in stored:
        cache.store(ids, entries_of(ids, 1), 1)
        assert cache.size_values <= capacity
        found = cache.lookup(ids, 1)
        assert (len(found) - 1) % cache.block_tokens == 0
        check_entries(found, ids, 1)


def test_blocks_are_whole_pages_of_at_least_16_tokens() -> None:
    assert PromptLogprobCache(100, 1).block_tokens == 16
    assert PromptLogprobCache(100, 16).block_tokens == 16
    assert PromptLogprobCache(100, 5).block_tokens == 20
    assert PromptLogprobCache(100, 64).block_tokens == 64


def test_known_length_less_one_is_whole_blocks() -> None:
    cache = PromptLogprobCache(10**6, 16)
    ids = list(range(40))
    cache.store(ids, entries_of(ids, 2), 2)
    assert len(cache.lookup(ids, 2)) == 33  # token 0, then two blocks of 16
    assert len(cache.lookup(ids[:33], 2)) == 33
    assert len(cache.lookup(ids[:32], 2)) == 17
    assert len(cache.lookup([99, *ids[1:]], 2)) == 1  # another first token: nothing shared
    assert cache.lookup([], 2) == []


def test_fewer_top_logprobs_are_cut_and_more_are_a_miss() -> None:
    cache = PromptLogprobCache(10**6, 16)
    ids = list(range(20))
    cache.store(ids, entries_of(ids, 2), 2)
    one = cache.lookup(ids, 1)
    assert len(one) == 17 and all(e.top is not None and len(e.top) == 1 for e in one[1:])
    assert all(e.top is None for e in cache.lookup(ids, 0))
    assert len(cache.lookup(ids, 3)) == 1
    cache.store(ids, entries_of(ids, 3), 3)  # richer entries replace the block in place
    three = cache.lookup(ids, 3)
    assert len(three) == 17 and all(e.top is not None and len(e.top) == 3 for e in three[1:])
    assert cache.size_values == 16 * 4


def test_least_recently_used_blocks_go_first() -> None:
    cache = PromptLogprobCache(capacity_values=2 * 16 * 2, page_size=16)  # two blocks at k=1
    a, b, c = ([t] * 17 for t in (1, 2, 3))
    cache.store(a, entries_of(a, 1), 1)
    cache.store(b, entries_of(b, 1), 1)
    cache.lookup(a, 1)  # a is now the most recent
    cache.store(c, entries_of(c, 1), 1)
    assert [len(cache.lookup(p, 1)) for p in (a, b, c)] == [17, 1, 17]


def test_store_needs_one_entry_per_token() -> None:
    cache = PromptLogprobCache(10**6, 16)
    with pytest.raises(ValueError, match="3 logprob entries for a prompt of 4 tokens"):
        cache.store([1, 2, 3, 4], entries_of([1, 2, 3], 1), 1)
