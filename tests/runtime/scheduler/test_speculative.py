"""N-gram speculative decoding in the scheduler with a stand-in runner.

The stand-in's next token usually repeats what followed the last token's previous occurrence
(so context lookups often guess right) and otherwise is a hash (so some drafts are rejected).
Outputs must equal one-token-at-a-time decoding under every page size, draft width, stop and
memory pressure, with fewer runner steps and every page accounted for.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Sequence

import pytest

from radixserve.runtime.scheduler.ngram import propose_drafts
from radixserve.runtime.scheduler.scheduler import Scheduler
from radixserve.runtime.wire.messages import GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.scheduler.stand_in_runner import StandInRunner
from tests.runtime.scheduler.test_scheduler import (
    VOCAB,
    make_scheduler,
    run_all,
    shared_prefix_prompts,
)


def copying_next(sequence: Sequence[int]) -> int:
    digest = zlib.crc32(array("q", sequence).tobytes())
    if digest % 4:  # three times in four: continue as after the last token's previous occurrence
        last = sequence[-1]
        for p in range(len(sequence) - 2, -1, -1):
            if sequence[p] == last:
                return sequence[p + 1]
    return digest % VOCAB


class CopyingRunner(StandInRunner):
    def next_token(self, sequence: Sequence[int]) -> int:
        return copying_next(sequence)


def reference(prompt: list[int], max_new: int, stop: int | None = None) -> list[int]:
    seq, out = list(prompt), []
    while len(out) < max_new:
        token = copying_next(seq)
        out.append(token)
        seq.append(token)
        if token == stop:
            break
    return out


def make(
    num_pages: int, page_size: int, drafts: int, chunk: int = 256, ngram_min: int = 1
) -> Scheduler:
    # The stand-in copies what followed the last token alone, so drafts from one-token matches.
    return make_scheduler(
        num_pages,
        page_size,
        chunk,
        runner_type=CopyingRunner,
        num_draft_tokens=drafts,
        ngram_min=ngram_min,
    )


def greedy(rid: str, prompt: list[int], max_new: int, **extra: object) -> GenerateReq:
    params = SamplingParams(max_new_tokens=max_new, temperature=0, **extra)
    return GenerateReq(rid=rid, input_ids=prompt, sampling=params)


@pytest.mark.parametrize(("page_size", "drafts"), [(1, 1), (4, 3), (16, 5)])
def test_outputs_match_one_token_at_a_time(page_size: int, drafts: int) -> None:
    prompts = shared_prefix_prompts(10)
    scheduler = make(4096 // page_size, page_size, drafts)
    for i, prompt in enumerate(prompts):
        scheduler.add_request(greedy(f"r{i}", prompt, 50 + 3 * i))
    results = run_all(scheduler)
    for i, prompt in enumerate(prompts):
        tokens, last = results[f"r{i}"]
        assert tokens == reference(prompt, 50 + 3 * i), f"request {i}"
        assert last.completion_tokens == 50 + 3 * i and last.finish.type == "length"
    counters = scheduler.counters
    assert 0 < counters.spec_accepted_tokens < counters.spec_draft_tokens  # some kept, some not
    scheduler.flush_cache()
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


def test_fewer_steps_for_the_same_tokens() -> None:
    prompt = shared_prefix_prompts(1)[0]
    steps = {}
    for drafts in (0, 4):
        scheduler = make(512, 16, drafts)
        scheduler.add_request(greedy("r", prompt, 120))
        assert run_all(scheduler)["r"][0] == reference(prompt, 120)
        steps[drafts] = scheduler.runner.steps
    assert steps[0] == 120
    assert steps[4] < 90, steps


def test_under_memory_pressure() -> None:
    prompts = shared_prefix_prompts(16, seed=5)
    scheduler = make(96, 4, 4)
    for i, prompt in enumerate(prompts):
        scheduler.add_request(greedy(f"r{i}", prompt, 80))
    results = run_all(scheduler)
    for i, prompt in enumerate(prompts):
        assert results[f"r{i}"][0] == reference(prompt, 80), f"request {i}"
    assert scheduler.counters.retractions > 0
    assert scheduler.counters.spec_accepted_tokens > 0
    scheduler.flush_cache()
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


def test_a_stop_token_among_kept_drafts_ends_there() -> None:
    prompt = shared_prefix_prompts(1, seed=2)[0]
    full = reference(prompt, 120)
    stop = full[60]
    expected = reference(prompt, 120, stop=stop)
    scheduler = make(512, 16, 5)
    scheduler.add_request(greedy("r", prompt, 120, stop_token_ids=[stop]))
    tokens, last = run_all(scheduler)["r"]
    assert tokens == expected and last.finish.type == "stop" and last.finish.matched == stop


def test_only_exact_requests_speculate() -> None:
    # Sampled, penalized and logprob requests decode one token at a time.
    prompt = shared_prefix_prompts(1)[0]
    scheduler = make(512, 16, 4)
    scheduler.add_request(
        GenerateReq(rid="a", input_ids=prompt, sampling=SamplingParams(max_new_tokens=30))
    )
    scheduler.add_request(greedy("b", prompt, 30, repetition_penalty=1.2))
    scheduler.add_request(
        GenerateReq(
            rid="c",
            input_ids=prompt,
            sampling=SamplingParams(max_new_tokens=30, temperature=0),
            return_logprob=True,
        )
    )
    run_all(scheduler)
    assert scheduler.counters.spec_draft_tokens == 0


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([1, 2, 3, 4, 5, 1, 2, 3], [4, 5, 1, 2]),  # the longest suffix (1, 2, 3) occurs at 0
        ([7, 2, 3, 9, 8, 2, 3], [9, 8, 2, 3]),  # (2, 3)
        ([1, 2, 3, 2, 9, 3], [2, 9, 3]),  # only (3,) occurs earlier: what followed it
        ([1, 2, 3], []),
        ([256, 1, 256], [1, 256]),  # an unaligned byte match is skipped
        ([4, 4], [4]),
    ],
)
def test_propose_drafts(tokens: list[int], expected: list[int]) -> None:
    assert propose_drafts(tokens, 4, 3) == expected


@pytest.mark.parametrize(
    ("tokens", "min_ngram", "expected"),
    [
        ([1, 2, 3, 2, 9, 3], 2, []),  # only a one-token match: no guess
        ([7, 2, 3, 9, 8, 2, 3], 2, [9, 8, 2, 3]),
        ([7, 2, 3, 9, 8, 2, 3], 3, []),
        ([5, 6, 7, 1, 5, 6, 7], 3, [1, 5, 6, 7]),
    ],
)
def test_propose_drafts_from_at_least_min_ngram(
    tokens: list[int], min_ngram: int, expected: list[int]
) -> None:
    assert propose_drafts(tokens, 4, 3, min_ngram) == expected


def test_min_ngram_drafts_fewer_for_the_same_outputs() -> None:
    prompts = shared_prefix_prompts(6)
    results = {}
    for ngram_min in (1, 2):
        scheduler = make(512, 16, 4, ngram_min=ngram_min)
        for i, prompt in enumerate(prompts):
            scheduler.add_request(greedy(f"r{i}", prompt, 60))
        outputs = run_all(scheduler)
        for i, prompt in enumerate(prompts):
            assert outputs[f"r{i}"][0] == reference(prompt, 60), f"request {i}"
        results[ngram_min] = scheduler.counters.spec_draft_tokens
    assert 0 < results[2] < results[1], results
