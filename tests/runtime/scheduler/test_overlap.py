"""Overlap scheduling with the stand-in runner: every scheduler scenario gives the same outputs
with overlap on and off, the cache's integrity holds after every step, and the overlap really
happens (a batch stays in flight, futures are resolved, finished requests' decodes are dropped).

Under overlap the stand-in resolves each future placeholder from the previous launch's samples
only, so a placeholder that refers to the wrong request or launch changes the output.
"""

from __future__ import annotations

import random

import pytest

from radixserve.runtime.scheduler.batch_builder import BatchPlan
from radixserve.runtime.scheduler.scheduler import Scheduler
from radixserve.runtime.wire.messages import AbortCode, FinishReason, GenerateReq, TokenOut
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.scheduler.stand_in_runner import expected_output, fake_logprob, next_token
from tests.runtime.scheduler.test_jump_forward import (
    ForcingBackend,
    constrained,
    expected_constrained,
)
from tests.runtime.scheduler.test_lifecycle import FailingRunner, drain, finals, make_loop
from tests.runtime.scheduler.test_scheduler import (
    VOCAB,
    make_scheduler,
    request,
    run_all,
    shared_prefix_prompts,
)
from tests.runtime.scheduler.test_speculative import CopyingRunner, greedy, reference

Results = dict[str, tuple[list[int], TokenOut]]


def both(
    requests: list[GenerateReq], **options: object
) -> tuple[Results, Results, Scheduler, Scheduler]:
    """The same requests through a scheduler without and with overlap (integrity checked after
    every step by run_all); the outputs must be identical."""
    runs = []
    for overlap in (False, True):
        scheduler = make_scheduler(**options, overlap=overlap)  # type: ignore[arg-type]
        for req in requests:
            scheduler.add_request(req)
        runs.append((run_all(scheduler), scheduler))
    (off, sync), (on, overlapped) = runs
    assert tokens_and_finishes(on) == tokens_and_finishes(off)
    assert sync.counters.overlapped_steps == 0 and sync.runner.max_in_flight == 1
    return off, on, sync, overlapped


def tokens_and_finishes(results: Results) -> dict[str, tuple[list[int], FinishReason | None]]:
    return {rid: (ids, out.finish) for rid, (ids, out) in results.items()}


def assert_idle_and_all_pages_back(scheduler: Scheduler) -> None:
    assert not scheduler.has_work and not scheduler.requests
    assert scheduler.flush_cache()
    scheduler.check_integrity()
    assert scheduler.inflight is None
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


@pytest.mark.parametrize("policy", ["lpm", "fcfs", "dfs-weight"])
@pytest.mark.parametrize("page_size", [1, 16])
def test_batching_and_sharing(policy: str, page_size: int) -> None:
    prompts = shared_prefix_prompts(24)
    requests = [request(f"r{i}", p, 12 + i % 5) for i, p in enumerate(prompts)]
    off, on, _, overlapped = both(requests, page_size=page_size, policy=policy)
    for i, p in enumerate(prompts):
        assert on[f"r{i}"][0] == expected_output(p, 12 + i % 5, VOCAB)
    runner = overlapped.runner
    assert runner.max_in_flight == 2 and runner.futures_resolved > 0
    assert overlapped.counters.overlapped_steps > 0
    assert sum(out.cached_tokens > 0 for _, out in on.values()) >= 20  # sharing still works
    assert_idle_and_all_pages_back(overlapped)


def test_length_finishes_waste_no_decode() -> None:
    """A sample in flight that reaches max_new_tokens ends its request for sure: the next step
    gives it no slice (nothing to drop)."""
    prompts = shared_prefix_prompts(6, seed=4)
    requests = [request(f"r{i}", p, 1 + i) for i, p in enumerate(prompts)]
    _, _, sync, overlapped = both(requests)
    assert overlapped.counters.dropped_results == 0
    assert overlapped.counters.decode_tokens == sync.counters.decode_tokens


def logprob_request(rid: str, prompt: list[int], max_new: int, start: int) -> GenerateReq:
    params = SamplingParams(max_new_tokens=max_new)
    return GenerateReq(
        rid=rid, input_ids=prompt, sampling=params, return_logprob=True, logprob_start_len=start
    )


def collect_logprobs(scheduler: Scheduler) -> dict[str, tuple[list, list[float]]]:
    """Steps until idle (integrity checked after each); each request's prompt and output
    logprobs, gathered from all its outputs."""
    gathered: dict[str, tuple[list, list[float]]] = {}
    while scheduler.has_work:
        for out in scheduler.step():
            inputs, outputs = gathered.setdefault(out.rid, ([], []))
            inputs.extend(out.input_logprobs or [])
            outputs.extend(out.output_logprobs or [])
        scheduler.check_integrity()
    return gathered


def expected_prompt_logprobs(prompt: list[int], start: int) -> list[float | None]:
    lead: list[float | None] = [None] if start == 0 else []
    return lead + [fake_logprob(prompt[:t], prompt[t]) for t in range(max(start, 1), len(prompt))]


def test_chunked_prefill_with_prompt_logprobs() -> None:
    prompts = [list(range(7 * i, 7 * i + 300)) for i in range(4)]
    gathered = {}
    for overlap in (False, True):
        scheduler = make_scheduler(chunk=64, overlap=overlap)
        for i, p in enumerate(prompts):
            scheduler.add_request(logprob_request(f"r{i}", p, 6, 10 * i))
        gathered[overlap] = collect_logprobs(scheduler)
        assert scheduler.runner.max_in_flight == (2 if overlap else 1)
    assert gathered[True] == gathered[False]
    for i, p in enumerate(prompts):
        inputs, outputs = gathered[True][f"r{i}"]
        assert inputs == expected_prompt_logprobs(p, 10 * i) and len(outputs) == 6


@pytest.mark.parametrize(("in_flight", "steps"), [("chunk", 3), ("last chunk", 5), ("decode", 7)])
def test_retraction_while_a_slice_is_in_flight(in_flight: str, steps: int) -> None:
    """Memory pressure retracts a request whose slice is still in flight, after earlier chunks'
    prompt logprobs arrived. A chunk short of the prompt's end: the retraction drops the
    logprobs (the stale chunk's too) and the re-prefill computes them all again. The prompt's
    last chunk or a decode: its sample counts and keeps the logprobs, and the request is not
    admitted again before that sample is in. Either way the outputs and the prompt logprobs
    are the reference's, each once."""
    prompt = list(range(3, 303))  # 5 chunks of 64
    scheduler = make_scheduler(chunk=64, overlap=True)
    scheduler.add_request(logprob_request("r", prompt, 8, 0))
    scheduler.add_request(request("other", list(range(500, 540)), 12))
    req = scheduler.requests["r"]
    early: list[int] = []
    for _ in range(steps):
        early += [t for o in scheduler.step() if o.rid == "r" for t in o.new_token_ids]
    assert req.input_logprobs and scheduler.inflight is not None
    assert (req.future is not None) == (in_flight != "chunk")
    assert bool(req.output_ids) == (in_flight == "decode")
    scheduler.builder._retract(req, scheduler.waiting, scheduler.running, BatchPlan())
    scheduler.check_integrity()
    logprobs = collect_logprobs(scheduler)["r"]
    assert req.retractions == 1 and req.finish is not None
    assert req.output_ids == expected_output(prompt, 8, VOCAB)
    if in_flight != "decode":  # else they went out before the retraction
        assert logprobs[0] == expected_prompt_logprobs(prompt, 0)
    assert_idle_and_all_pages_back(scheduler)


def test_logprobs_under_memory_pressure() -> None:
    """Optimistic admission runs the pool dry: requests are retracted with samples in flight."""
    rng = random.Random(6)
    prompts = [[rng.randrange(VOCAB) for _ in range(rng.randrange(100, 200))] for _ in range(16)]
    gathered = {}
    for overlap in (False, True):
        scheduler = make_scheduler(num_pages=64, page_size=16, chunk=64, overlap=overlap)
        scheduler.builder.new_token_ratio = 0.1  # admit as if requests ended early
        for i, p in enumerate(prompts):
            scheduler.add_request(logprob_request(f"r{i}", p, 200, 0))
        gathered[overlap] = collect_logprobs(scheduler)
        assert scheduler.counters.retractions > 0
        assert_idle_and_all_pages_back(scheduler)
    assert gathered[True] == gathered[False]
    for i, p in enumerate(prompts):
        inputs, outputs = gathered[True][f"r{i}"]
        assert inputs == expected_prompt_logprobs(p, 0) and len(outputs) == 200


def test_memory_pressure_evicts_and_retracts() -> None:
    rng = random.Random(1)
    prompts = [[rng.randrange(VOCAB) for _ in range(rng.randrange(60, 200))] for _ in range(32)]
    requests = [request(f"r{i}", p, 120) for i, p in enumerate(prompts)]
    _, on, _, overlapped = both(requests, num_pages=64, chunk=512)
    for i, p in enumerate(prompts):
        assert on[f"r{i}"][0] == expected_output(p, 120, VOCAB), f"request {i}"
    assert overlapped.counters.retractions > 0
    assert overlapped.cache.stats().evicted_pages > 0
    assert_idle_and_all_pages_back(overlapped)


def test_abort_mid_decode_frees_everything() -> None:
    for overlap in (False, True):
        scheduler = make_scheduler(overlap=overlap)
        scheduler.add_request(request("a", list(range(100)), 1000))
        scheduler.add_request(request("b", list(range(50, 130)), 5))
        early: list[int] = []
        for _ in range(3):
            early += [t for out in scheduler.step() if out.rid == "b" for t in out.new_token_ids]
            scheduler.check_integrity()
        scheduler.abort("a")
        results = run_all(scheduler)
        assert results["a"][1].finish.type == "abort"
        assert early + results["b"][0] == expected_output(list(range(50, 130)), 5, VOCAB)
        assert scheduler.counters.requests_aborted == 1
        assert_idle_and_all_pages_back(scheduler)


def test_stop_tokens_drop_the_wasted_decode() -> None:
    prompts = shared_prefix_prompts(8, seed=2)
    requests = []
    for i, p in enumerate(prompts):
        stop = expected_output(p, 20, VOCAB)[3 + i]
        params = SamplingParams(max_new_tokens=20, stop_token_ids=[stop])
        requests.append(GenerateReq(rid=f"s{i}", input_ids=p, sampling=params))
    _, on, _, overlapped = both(requests)
    for i in range(len(prompts)):
        ids, out = on[f"s{i}"]
        assert out.finish.type == "stop" and ids[-1] == out.finish.matched
        assert len(ids) <= 4 + i
    # Each stop is seen one step late: the decode launched meanwhile is dropped (the last one
    # when the idle scheduler drains its batch in flight, as a cache flush does).
    assert overlapped.counters.dropped_results == len(prompts) - 1
    assert_idle_and_all_pages_back(overlapped)
    assert overlapped.counters.dropped_results == len(prompts)


def test_min_new_tokens_counts_the_sample_in_flight() -> None:
    """The ban on a stop token lifts after min_new_tokens outputs, counting the one still in
    flight; counting only the applied ones would ban it one step too long. Each request's stop
    token is chosen to come exactly when the ban lifts."""
    prompts = shared_prefix_prompts(6, seed=8)
    requests, expected = [], {}
    for i, p in enumerate(prompts):
        min_new = 3 + i
        stop = next(
            c
            for c in range(VOCAB)
            if len(seq := with_min_new_tokens(p, 30, c, min_new)) == min_new + 1 and seq[-1] == c
        )
        params = SamplingParams(max_new_tokens=30, stop_token_ids=[stop], min_new_tokens=min_new)
        requests.append(GenerateReq(rid=f"m{i}", input_ids=p, sampling=params))
        expected[f"m{i}"] = with_min_new_tokens(p, 30, stop, min_new)
    _, on, _, _ = both(requests)
    assert {rid: ids for rid, (ids, _) in on.items()} == expected
    assert all(out.finish.type == "stop" for _, out in on.values())


def with_min_new_tokens(prompt: list[int], max_new: int, stop: int, min_new: int) -> list[int]:
    """The stand-in's rule alone: `stop` is banned (the pick moves on) before min_new outputs."""
    seq, out = list(prompt), []
    while len(out) < max_new:
        token = next_token(seq, VOCAB)
        while len(out) < min_new and token == stop:
            token = (token + 1) % VOCAB
        out.append(token)
        seq.append(token)
        if token == stop:
            break
    return out


def test_jump_forward_grammars_fall_back_to_synchronous_steps() -> None:
    prompts = shared_prefix_prompts(8, seed=3)
    requests = [
        constrained(f"r{i}", p, 25)
        if i % 2
        else GenerateReq(rid=f"r{i}", input_ids=p, sampling=SamplingParams(max_new_tokens=25))
        for i, p in enumerate(prompts)
    ]
    _, on, _, overlapped = both(requests, grammar_backend=ForcingBackend(), jump_forward=True)
    for i, p in enumerate(prompts):
        expected = expected_constrained(p, 25) if i % 2 else expected_output(p, 25, VOCAB)
        assert on[f"r{i}"][0] == expected
    # Batches with a sampling grammar request are collected at once; the plain ones that
    # outlive them overlap.
    assert 0 < overlapped.counters.overlapped_steps < overlapped.counters.steps
    assert overlapped.counters.jump_forward_tokens > 0
    assert_idle_and_all_pages_back(overlapped)


def test_grammar_only_runs_are_synchronous() -> None:
    prompt = shared_prefix_prompts(1)[0]
    _, on, _, overlapped = both(
        [constrained("c", prompt, 60)], grammar_backend=ForcingBackend(), jump_forward=True
    )
    assert on["c"][0] == expected_constrained(prompt, 60)
    assert overlapped.counters.overlapped_steps == 0


@pytest.mark.parametrize(("page_size", "drafts"), [(1, 1), (16, 5)])
def test_ngram_speculation(page_size: int, drafts: int) -> None:
    prompts = shared_prefix_prompts(6)
    requests = [greedy(f"r{i}", p, 50 + 3 * i) for i, p in enumerate(prompts)]
    requests.append(
        GenerateReq(rid="sampled", input_ids=prompts[0], sampling=SamplingParams(max_new_tokens=30))
    )
    _, on, _, overlapped = both(
        requests,
        num_pages=4096 // page_size,
        page_size=page_size,
        runner_type=CopyingRunner,
        num_draft_tokens=drafts,
    )
    for i, p in enumerate(prompts):
        assert on[f"r{i}"][0] == reference(p, 50 + 3 * i), f"request {i}"
    assert overlapped.counters.spec_accepted_tokens > 0
    assert_idle_and_all_pages_back(overlapped)


def test_finish_found_outside_while_a_batch_is_in_flight() -> None:
    scheduler = make_scheduler(overlap=True)
    prompt = list(range(100))
    scheduler.add_request(request("x", prompt, 1000))
    scheduler.add_request(request("y", list(range(50, 90)), 5))
    for _ in range(4):
        scheduler.step()
    assert scheduler.inflight is not None
    scheduler.finish_externally("x", FinishReason("stop", matched="END"))
    scheduler.check_integrity()
    results = run_all(scheduler)
    assert "x" not in results and results["y"][1].finish.type == "length"
    assert scheduler.counters.requests_finished == 2
    assert_idle_and_all_pages_back(scheduler)


def test_a_failed_step_under_overlap_aborts_and_serves_on() -> None:
    class FailsOnFourthStep(FailingRunner):
        fail_on = frozenset({4})

    scheduler = make_scheduler(runner_type=FailsOnFourthStep, overlap=True)
    loop, sent = make_loop(scheduler)
    for i in range(4):
        loop.handle(request(f"r{i}", list(range(i, 40 + i)), 50))
    drain(loop, sent)
    ends = finals(sent)
    assert set(ends) == {"r0", "r1", "r2", "r3"}
    assert all(f.code == AbortCode.INTERNAL for f in ends.values())
    assert scheduler.inflight is None
    assert_idle_and_all_pages_back(scheduler)
    sent.messages.clear()
    prompt = list(range(200, 260))
    loop.handle(request("after", prompt, 6))
    drain(loop, sent)
    assert [t for o in sent.outputs() for t in o.new_token_ids] == expected_output(prompt, 6, VOCAB)


def test_step_stats_say_where_the_time_went() -> None:
    scheduler = make_scheduler(chunk=4096, overlap=True)
    for i in range(8):  # unrelated prompts: all admitted at once
        scheduler.add_request(request(f"r{i}", list(range(50 * i, 50 * i + 40)), 10))
    scheduler.step()
    first = scheduler.last_step
    assert first.overlapped and first.device_wait_seconds == 0.0  # nothing collected yet
    scheduler.step()
    stats = scheduler.last_step
    assert stats.overlapped and stats.decode_tokens == 8
    parts = stats.build_seconds + stats.launch_seconds + stats.device_wait_seconds
    assert 0 < parts + stats.result_seconds <= stats.wall_seconds
    assert stats.schedule_seconds == pytest.approx(stats.wall_seconds - stats.forward_seconds)
    assert scheduler.counters.wall_seconds >= stats.wall_seconds
