"""Overlap scheduling with the real SmolLM2 runner through the Engine: the same outputs with
overlap on and off, for every feature that reads a step's samples (penalties and seeded draws
count the sample still on the device, min_new_tokens bans, stop tokens, logprobs, chunked
prefill, grammars, n-gram drafts), with the cache's integrity intact."""

from __future__ import annotations

from typing import Any

import pytest

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.entrypoints.components import overlap_schedule
from radixserve.runtime.entrypoints.engine import Engine

PROMPTS = [
    "The history of the printing press begins",
    "Write a short poem about the sea.",
    "List three prime numbers:",
    "In a distant galaxy, a small robot",
    " ".join(f"item {i} is {i * 7 % 13}." for i in range(40)),  # ~320 tokens: chunked
    "Photosynthesis is the process by which",
]


def test_the_default_is_overlap_on_a_gpu_only() -> None:
    assert overlap_schedule(ServerArgs(device="cpu")) is False
    assert overlap_schedule(ServerArgs(device="cuda")) is True
    assert overlap_schedule(ServerArgs(device="cuda", disable_overlap_schedule=True)) is False
    assert overlap_schedule(ServerArgs(device="cpu", disable_overlap_schedule=False)) is True


@pytest.fixture(scope="module")
def engine():
    eng = Engine(max_total_tokens=16384, chunked_prefill_size=96, disable_overlap_schedule=False)
    assert eng.scheduler.overlap
    yield eng
    eng.shutdown()


def run_both(
    engine: Engine, params: list[dict[str, Any]], overlaps: bool = True, **options: Any
) -> list[dict]:
    """The prompts with overlap off, then on (the cache flushed before each): same outputs.
    `overlaps`: whether any step of the second run may overlap."""
    runs = {}
    for overlap in (False, True):
        assert engine.flush_cache()
        engine.scheduler.overlap = overlap
        before = engine.scheduler.counters.overlapped_steps
        runs[overlap] = engine.generate(PROMPTS, params, **options)
        engine.scheduler.check_integrity()
        overlapped = engine.scheduler.counters.overlapped_steps - before
        assert (overlapped > 0) == (overlap and overlaps), overlapped
    engine.scheduler.overlap = True
    assert [o["output_ids"] for o in runs[True]] == [o["output_ids"] for o in runs[False]]
    finishes = [[o["meta_info"]["finish_reason"] for o in runs[f]] for f in (False, True)]
    assert finishes[0] == finishes[1]
    return runs[True]


def test_greedy_with_stops_and_min_new_tokens(engine: Engine) -> None:
    eos = engine.tokenizer.eos_token_id
    params = [
        {"temperature": 0, "max_new_tokens": 4 + 5 * i, "min_new_tokens": 3 if i % 2 else 0}
        for i in range(len(PROMPTS))
    ]
    params[2]["stop_token_ids"] = [eos, 11]  # "," in SmolLM2's vocabulary
    outputs = run_both(engine, params)
    assert [o["meta_info"]["completion_tokens"] >= 3 for o in outputs[1::2]]


def test_penalties_and_seeded_sampling_count_the_sample_in_flight(engine: Engine) -> None:
    params = [
        {"temperature": 0, "max_new_tokens": 24, "repetition_penalty": 1.3},
        {"temperature": 0, "max_new_tokens": 24, "frequency_penalty": 1.5},
        {"temperature": 0, "max_new_tokens": 24, "presence_penalty": 1.5, "ignore_eos": True},
        {"temperature": 0.9, "seed": 7, "max_new_tokens": 24, "ignore_eos": True},
        {"temperature": 0.7, "top_p": 0.9, "seed": 11, "max_new_tokens": 24},
        {"temperature": 0, "max_new_tokens": 24, "logit_bias": {11: 5.0}},
    ]
    run_both(engine, params)


def test_logprobs_are_the_same(engine: Engine) -> None:
    params = {"temperature": 0, "max_new_tokens": 10}
    runs = {}
    for overlap in (False, True):
        assert engine.flush_cache()
        engine.scheduler.overlap = overlap
        runs[overlap] = engine.generate(
            PROMPTS, params, return_logprob=True, logprob_start_len=0, top_logprobs_num=3
        )
    engine.scheduler.overlap = True
    for on, off in zip(runs[True], runs[False], strict=True):
        assert on["output_ids"] == off["output_ids"]
        for key in ("input_token_logprobs", "output_token_logprobs"):
            assert [e[1] for e in on["meta_info"][key]] == [e[1] for e in off["meta_info"][key]]
            values = [e[0] for e in on["meta_info"][key] if e[0] is not None]
            expected = [e[0] for e in off["meta_info"][key] if e[0] is not None]
            assert values == pytest.approx(expected, abs=1e-4)
        top_on, top_off = (r["meta_info"]["output_top_logprobs"] for r in (on, off))
        assert [[t[1] for t in row] for row in top_on] == [[t[1] for t in row] for row in top_off]


def test_grammars_and_drafts_keep_their_outputs(engine: Engine) -> None:
    params = [
        {"temperature": 0, "max_new_tokens": 16, "regex": "(yes|no), because [a-z ]+\\."},
        {"temperature": 0, "max_new_tokens": 16, "json_schema": '{"type": "integer"}'},
    ] + [{"temperature": 0, "max_new_tokens": 30}] * (len(PROMPTS) - 2)
    run_both(engine, params)  # overlapped once the grammar requests are done
    config = engine.scheduler.config
    config.num_draft_tokens = 3  # n-gram speculation: greedy requests' steps run synchronously
    try:
        greedy = [{"temperature": 0, "max_new_tokens": 30}] * len(PROMPTS)
        run_both(engine, greedy, overlaps=False)
    finally:
        config.num_draft_tokens = 0


def test_abort_mid_decode_frees_everything(engine: Engine) -> None:
    from radixserve.runtime.wire.messages import GenerateReq
    from radixserve.runtime.wire.sampling_params import SamplingParams

    scheduler = engine.scheduler
    assert scheduler.overlap
    ids = engine.tokenizer.encode("Write a very long story about a dragon.")
    params = SamplingParams(max_new_tokens=500, ignore_eos=True)
    scheduler.add_request(GenerateReq(rid="long", input_ids=ids, sampling=params))
    for _ in range(5):
        scheduler.step()
        scheduler.check_integrity()
    assert scheduler.inflight is not None and scheduler.running[0].output_ids
    scheduler.abort("long")
    (out,) = scheduler.step()
    assert out.finish is not None and out.finish.type == "abort"
    assert not scheduler.has_work and scheduler.inflight is None
    scheduler.check_integrity()
    assert engine.flush_cache()
    assert engine.state.cache.num_free_pages == engine.state.cache.num_pages
