"""The scheduler with the real SmolLM2 runner: concurrency, memory pressure, chunking, abort."""

from __future__ import annotations

import random

import pytest

from radixserve.runtime.entrypoints.engine import Engine
from radixserve.runtime.wire.messages import GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams

GREEDY = {"temperature": 0, "ignore_eos": True}


def overlapping_prompts(count: int) -> list[str]:
    system = (
        "You are a careful assistant. Answer briefly and precisely, using plain words. "
        "Think about the question before answering it. "
    )
    topics = ["the moon", "volcanoes", "honey bees", "the Roman empire"]
    rng = random.Random(0)
    return [
        f"{system}Topic: {topics[i % 4]}. Question {i}: tell me one fact about "
        f"{rng.choice(['its size', 'its history', 'why it matters', 'a common myth'])}."
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def engine():
    eng = Engine(max_total_tokens=16384)
    yield eng
    eng.shutdown()


def test_24_concurrent_requests_equal_each_alone(engine: Engine) -> None:
    prompts = overlapping_prompts(24)
    params = {**GREEDY, "max_new_tokens": 6}
    alone = []
    for p in prompts:
        engine.flush_cache()
        alone.append(engine.generate(p, params)["output_ids"])
    engine.flush_cache()
    together = engine.generate(prompts, params)
    assert [o["output_ids"] for o in together] == alone
    cached = [o["meta_info"]["cached_tokens"] for o in together]
    assert cached[0] == 0 and all(c > 0 for c in cached[1:]), cached
    engine.scheduler.check_integrity()


def test_chunked_prefill_equals_unchunked(engine: Engine) -> None:
    prompt = " ".join(f"item {i} is {i * 7 % 13}." for i in range(60))  # ~480 tokens
    config = engine.scheduler.config
    assert len(engine.tokenizer.encode(prompt)) >= 4 * 96
    outputs = []
    for chunk in (96, 4096):
        engine.flush_cache()
        config.chunked_prefill_size = chunk
        steps_before = engine.scheduler.counters.steps
        outputs.append(engine.generate(prompt, {**GREEDY, "max_new_tokens": 8})["output_ids"])
        steps = engine.scheduler.counters.steps - steps_before
        assert steps >= (5 + 7 if chunk == 96 else 8), steps  # >= 5 chunks of 96, 7 decodes
    config.chunked_prefill_size = 2048
    assert outputs[0] == outputs[1]


def test_memory_pressure_64_pages_32_requests() -> None:
    engine = Engine(page_size=16, max_total_tokens=64 * 16, chunked_prefill_size=512)
    rng = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    prompts = [" ".join(rng.choice(words) for _ in range(rng.randrange(40, 90))) for _ in range(32)]
    params = {**GREEDY, "max_new_tokens": 8}
    alone = []
    for p in prompts:
        alone.append(engine.generate(p, params)["output_ids"])
    together = engine.generate(prompts, params)
    assert [o["output_ids"] for o in together] == alone
    stats = engine.scheduler.stats()
    assert stats.retractions > 0, stats
    assert stats.cache.evicted_pages > 0, stats
    engine.scheduler.check_integrity()
    engine.flush_cache()
    assert engine.state.cache.num_free_pages == engine.state.cache.num_pages


def test_abort_mid_decode_frees_everything(engine: Engine) -> None:
    scheduler = engine.scheduler
    ids = engine.tokenizer.encode("Write a very long story about a dragon.")
    scheduler.add_request(
        GenerateReq(
            rid="long", input_ids=ids, sampling=SamplingParams(max_new_tokens=500, ignore_eos=True)
        )
    )
    for _ in range(5):
        scheduler.step()
        scheduler.check_integrity()
    assert scheduler.running and scheduler.running[0].output_ids
    scheduler.abort("long")
    (out,) = scheduler.step()
    assert out.finish is not None and out.finish.type == "abort"
    assert not scheduler.has_work
    scheduler.check_integrity()
    engine.flush_cache()
    assert engine.state.cache.num_free_pages == engine.state.cache.num_pages
