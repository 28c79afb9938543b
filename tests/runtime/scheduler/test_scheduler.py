"""Scheduler behaviour with a stand-in runner: batching, sharing, chunking, pressure, abort."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.radix_cache import NaiveCache, RadixCache
from radixserve.runtime.scheduler.batch_builder import shares_more_than
from radixserve.runtime.scheduler.scheduler import Scheduler, SchedulerConfig
from radixserve.runtime.wire.messages import GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.scheduler.stand_in_runner import StandInRunner, expected_output

VOCAB = 997
EOS = 10_000  # outside the fake vocabulary: never sampled


def make_scheduler(
    num_pages: int = 512,
    page_size: int = 16,
    chunk: int = 256,
    policy: str = "lpm",
    radix: bool = True,
    max_running: int = 256,
    runner_type: type[StandInRunner] = StandInRunner,
    num_draft_tokens: int = 0,
    ngram_min: int = 2,
    **scheduler_options: Any,
) -> Scheduler:
    """A scheduler over a stand-in runner; `scheduler_options` go to Scheduler (grammar_backend,
    jump_forward)."""
    cache = (
        RadixCache(num_pages, page_size=page_size)
        if radix
        else NaiveCache(num_pages, page_size=page_size)
    )
    config = SchedulerConfig(
        page_size=page_size,
        context_len=4096,
        chunked_prefill_size=chunk,
        max_prefill_tokens=chunk,
        max_running_requests=max_running,
        schedule_policy=policy,
        num_draft_tokens=num_draft_tokens,
        ngram_min=ngram_min,
    )
    runner = runner_type(num_pages, page_size, VOCAB)
    return Scheduler(runner, cache, config, [EOS], sharing=radix, **scheduler_options)


def request(rid: str, prompt: list[int], max_new: int) -> GenerateReq:
    return GenerateReq(rid=rid, input_ids=prompt, sampling=SamplingParams(max_new_tokens=max_new))


def run_all(
    scheduler: Scheduler, check: bool = True, max_steps: int = 100_000
) -> dict[str, object]:
    """Steps until idle; returns rid -> (output ids, last TokenOut); checks integrity each step."""
    outputs: dict[str, list[int]] = {}
    last: dict[str, object] = {}
    for _ in range(max_steps):
        if not scheduler.has_work:
            break
        for out in scheduler.step():
            outputs.setdefault(out.rid, []).extend(out.new_token_ids)
            last[out.rid] = out
        if check:
            scheduler.check_integrity()
    assert not scheduler.has_work, "scheduler did not finish"
    return {rid: (outputs.get(rid, []), last[rid]) for rid in last}


def shared_prefix_prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    system = [rng.randrange(VOCAB) for _ in range(100)]
    branches = [[rng.randrange(VOCAB) for _ in range(40)] for _ in range(4)]
    return [
        system + branches[i % 4] + [rng.randrange(VOCAB) for _ in range(rng.randrange(1, 30))]
        for i in range(count)
    ]


@pytest.mark.parametrize("policy", ["lpm", "fcfs", "dfs-weight"])
@pytest.mark.parametrize("page_size", [1, 16])
def test_concurrency_is_invisible(policy: str, page_size: int) -> None:
    scheduler = make_scheduler(page_size=page_size, policy=policy)
    prompts = shared_prefix_prompts(24)
    for i, p in enumerate(prompts):
        scheduler.add_request(request(f"r{i}", p, 12))
    results = run_all(scheduler)
    for i, p in enumerate(prompts):
        ids, out = results[f"r{i}"]
        assert ids == expected_output(p, 12, VOCAB)
        assert out.finish is not None and out.finish.type == "length"
    cached = [results[f"r{i}"][1].cached_tokens for i in range(24)]
    assert sum(c > 0 for c in cached) >= 20, cached
    assert (
        scheduler.cache.num_free_pages + scheduler.cache.num_evictable_pages
        == scheduler.cache.num_pages
    )


def test_shared_prefix_waiting_together_is_computed_once() -> None:
    scheduler = make_scheduler(page_size=16, chunk=4096)
    prefix = list(range(500))
    for i in range(8):
        scheduler.add_request(request(f"r{i}", prefix + [600 + i], 2))
    run_all(scheduler)
    # 500 prefix tokens once (+ the unaligned tail recomputed by each), not eight times.
    assert scheduler.runner.prefill_tokens < 500 + 8 * 32, scheduler.runner.prefill_tokens


def test_memory_pressure_evicts_and_retracts() -> None:
    page_size = 16
    scheduler = make_scheduler(num_pages=64, page_size=page_size, chunk=512)
    rng = random.Random(1)
    prompts = [[rng.randrange(VOCAB) for _ in range(rng.randrange(60, 200))] for _ in range(32)]
    for i, p in enumerate(prompts):
        scheduler.add_request(request(f"r{i}", p, 120))
    results = run_all(scheduler)
    for i, p in enumerate(prompts):
        assert results[f"r{i}"][0] == expected_output(p, 120, VOCAB), f"request {i}"
    assert scheduler.counters.retractions > 0
    assert scheduler.cache.stats().evicted_pages > 0
    scheduler.cache.flush()
    scheduler.check_integrity()
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


def test_stats_count_the_tokens_waiting_requests_still_need() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(request("a", list(range(1, 41)), 4))
    scheduler.add_request(request("b", list(range(100, 125)), 4))
    waiting = scheduler.stats()
    assert (waiting.waiting, waiting.waiting_tokens, waiting.free_pages) == (2, 65, 512)
    scheduler.step()  # both admitted: their tokens now show as pages in use instead
    running = scheduler.stats()
    assert (running.waiting, running.waiting_tokens, running.running) == (0, 0, 2)
    assert running.free_pages < 512
    run_all(scheduler)
    assert scheduler.stats().waiting_tokens == 0


def test_chunked_prefill_matches_unchunked() -> None:
    prompt = list(range(1, 1025))
    outs = []
    for chunk in (256, 4096):
        scheduler = make_scheduler(chunk=chunk)
        scheduler.add_request(request("r", prompt, 8))
        outs.append(run_all(scheduler)["r"][0])
        assert scheduler.runner.steps >= (1024 // chunk) + 7
    assert outs[0] == outs[1] == expected_output(prompt, 8, VOCAB)


def test_abort_mid_decode_frees_everything() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(request("a", list(range(100)), 1000))
    scheduler.add_request(request("b", list(range(50, 130)), 5))
    early: list[int] = []
    for _ in range(3):
        early += [t for out in scheduler.step() if out.rid == "b" for t in out.new_token_ids]
    scheduler.abort("a")
    results = run_all(scheduler)
    assert results["a"][1].finish.type == "abort"
    assert early + results["b"][0] == expected_output(list(range(50, 130)), 5, VOCAB)
    scheduler.cache.flush()
    scheduler.check_integrity()
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


def test_abort_while_waiting() -> None:
    scheduler = make_scheduler(max_running=1)
    scheduler.add_request(request("a", list(range(40)), 5))
    scheduler.add_request(request("b", list(range(40)), 5))
    first = [t for out in scheduler.step() if out.rid == "a" for t in out.new_token_ids]
    assert [r.rid for r in scheduler.waiting] == ["b"]
    scheduler.abort("b")
    results = run_all(scheduler)
    assert results["b"][1].finish.type == "abort" and results["b"][0] == []
    assert first + results["a"][0] == expected_output(list(range(40)), 5, VOCAB)


def test_without_sharing_requests_with_a_common_prefix_prefill_together() -> None:
    """With the radix cache a request waits for a prefilling one it shares a prefix with (its
    pages will land in the tree); without it nothing lands, so all are admitted at once."""
    prefix = list(range(500))
    for radix, first_step in ((True, 1), (False, 8)):
        scheduler = make_scheduler(page_size=16, chunk=8192, radix=radix)
        for i in range(8):
            scheduler.add_request(request(f"r{i}", prefix + [600 + i], 2))
        scheduler.step()
        assert len(scheduler.running) == first_step, (radix, len(scheduler.running))
        run_all(scheduler)


def test_naive_cache_gives_same_outputs_without_sharing() -> None:
    scheduler = make_scheduler(radix=False)
    prompts = shared_prefix_prompts(10, seed=3)
    for i, p in enumerate(prompts):
        scheduler.add_request(request(f"r{i}", p, 6))
    results = run_all(scheduler)
    for i, p in enumerate(prompts):
        assert results[f"r{i}"][0] == expected_output(p, 6, VOCAB)
        assert results[f"r{i}"][1].cached_tokens == 0
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


def test_stop_token_and_eos() -> None:
    scheduler = make_scheduler()
    prompt = list(range(30))
    expected = expected_output(prompt, 20, VOCAB)
    stop_at = expected[5]
    params = SamplingParams(max_new_tokens=20, stop_token_ids=[stop_at])
    scheduler.add_request(GenerateReq(rid="s", input_ids=prompt, sampling=params))
    ids, out = run_all(scheduler)["s"]
    assert ids == expected[: expected.index(stop_at) + 1]
    assert out.finish.type == "stop" and out.finish.matched == stop_at


def test_max_new_tokens_zero_only_prefills() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(request("z", list(range(20)), 0))
    ids, out = run_all(scheduler)["z"]
    assert ids == [] and out.finish.type == "length" and out.completion_tokens == 0


def test_duplicate_rid_is_rejected() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(request("x", [1, 2, 3], 2))
    with pytest.raises(ValueError, match="already in use"):
        scheduler.add_request(request("x", [1, 2, 3], 2))


def test_decode_pages_needed_is_the_sum_of_extra_pages_needed() -> None:
    import random

    from radixserve.runtime.scheduler.kv_manager import RequestKVManager, pages_for
    from radixserve.runtime.scheduler.request import Req

    rng = random.Random(0)
    for page_size in (1, 4, 16):
        kv = RequestKVManager(cache=None, page_size=page_size, sharing=True)
        reqs = []
        for i in range(200):
            req = Req(rid=str(i), prompt_ids=[1], sampling=None)
            req.kv_len = rng.randrange(0, 100)
            # Page tables cover at least kv_len tokens, sometimes a page reserved ahead.
            req.page_table = [0] * (pages_for(req.kv_len, page_size) + rng.randrange(2))
            reqs.append(req)
        assert kv.decode_pages_needed(reqs) == sum(kv.extra_pages_needed(r, 1) for r in reqs)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=40),
    st.lists(st.integers(0, 3), max_size=40),
    st.integers(0, 45),
)
def test_shares_more_than_is_the_common_prefix_length_compared(
    a: list[int], b: list[int], length: int
) -> None:
    """Admission's sharing test (the token at `length` first, then one slice compare) against
    the common prefix length counted token by token."""
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    assert shares_more_than(a, b, length) == (common > length)
    assert shares_more_than(a, a, length) == (len(a) > length)
