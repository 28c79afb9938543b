"""The hierarchical cache with the real SmolLM2 runner through the Engine (the host tier's copies
run on real KV tensors): multi-turn sessions over a device pool far smaller than their histories
give the same greedy outputs with the tier on and off, and with it on, a prefix the device
evicted comes back from the host (cached_tokens cover it, the output is the same)."""

from __future__ import annotations

from typing import Any

import pytest

from radixserve.radix_cache.hicache import HierarchicalRadixCache
from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.entrypoints.components import check_hierarchical
from radixserve.runtime.entrypoints.engine import Engine
from radixserve.runtime.model_executor.kv_pool import HostKVPool

POOL_TOKENS = 512  # the device pool: a few sessions' histories overflow it
OPTIONS: dict[str, Any] = dict(max_total_tokens=POOL_TOKENS, page_size=16, chunked_prefill_size=256)
GREEDY = {"temperature": 0, "max_new_tokens": 8}
TOPICS = ["the sea", "a mountain village", "the printing press", "a small robot"]


def session_turns(engine: Engine, turns: int = 2) -> tuple[list[list[int]], list[int]]:
    """Four chat-like sessions, one turn of each per round, histories growing with the answers;
    returns every turn's output ids and cached_tokens."""
    histories = [f"Tell me a long story about {t}. " * 16 for t in TOPICS]
    outputs, cached = [], []
    for turn in range(turns):
        prompts = [h + f" Question {turn}: what happens next?" for h in histories]
        results = engine.generate(prompts, [GREEDY] * len(prompts))
        assert isinstance(results, list)
        for i, result in enumerate(results):
            outputs.append(result["output_ids"])
            cached.append(result["meta_info"]["cached_tokens"])
            histories[i] = prompts[i] + result["text"]
        engine.scheduler.check_integrity()
    return outputs, cached


@pytest.fixture(scope="module")
def engines():
    off = Engine(**OPTIONS)
    on = Engine(**OPTIONS, enable_hierarchical_cache=True, hicache_ratio=8.0)
    yield off, on
    off.shutdown()
    on.shutdown()


def test_greedy_outputs_are_the_same_with_the_tier_on_and_off(engines) -> None:
    off, on = engines
    assert isinstance(on.scheduler.cache, HierarchicalRadixCache)
    outputs_off, cached_off = session_turns(off)
    outputs_on, cached_on = session_turns(on)
    assert outputs_on == outputs_off
    stats = on.scheduler.stats()
    assert stats.cache.write_back_tokens > 0 and stats.cache.load_back_tokens > 0
    assert stats.cache.host_hit_tokens > 0 and stats.cache.host_pages == 8 * POOL_TOKENS // 16
    assert sum(cached_on) > sum(cached_off)
    assert on.scheduler.counters.prefill_tokens < off.scheduler.counters.prefill_tokens
    assert on.flush_cache() and off.flush_cache()


def test_a_written_back_prefix_is_cached_and_gives_the_same_output(engines) -> None:
    _, on = engines
    assert on.flush_cache()
    cache = on.scheduler.cache
    assert isinstance(cache, HierarchicalRadixCache)
    prompt = "Describe the water cycle in detail. " * 8
    first = on.generate(prompt, GREEDY)
    assert isinstance(first, dict)
    on.generate("Now something else entirely: the history of Rome. " * 48, GREEDY)
    prompt_ids = on.tokenizer(prompt)["input_ids"]
    match = cache.match_prefix(prompt_ids)
    assert match.host_len > 0, "the first prompt was not written back to the host"
    loaded_before = cache.load_back_tokens
    again = on.generate(prompt, GREEDY)
    assert isinstance(again, dict)
    assert again["output_ids"] == first["output_ids"]
    aligned = (len(prompt_ids) - 1) // 16 * 16
    assert again["meta_info"]["cached_tokens"] >= aligned
    assert cache.load_back_tokens > loaded_before
    on.scheduler.check_integrity()
    assert on.flush_cache()
    assert cache.num_free_pages == cache.num_pages and cache.host.num_free == cache.host.num_pages


def test_host_tier_sizes_and_bad_flags() -> None:
    with pytest.raises(ValueError, match="tp-size"):
        check_hierarchical(ServerArgs(enable_hierarchical_cache=True, tp_size=2))
    with pytest.raises(ValueError, match="radix cache"):
        check_hierarchical(ServerArgs(enable_hierarchical_cache=True, prefix_cache="block_hash"))
    with pytest.raises(ValueError, match="hicache-size"):
        check_hierarchical(ServerArgs(enable_hierarchical_cache=True, hicache_ratio=0))
    check_hierarchical(ServerArgs(enable_hierarchical_cache=True))


def test_host_pool_copies_pages_both_ways() -> None:
    import torch

    from radixserve.runtime.model_executor.kv_pool import KVPool

    pool = KVPool(
        8,
        4,
        num_layers=3,
        num_kv_heads=2,
        head_dim=5,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    for layer in range(3):
        pool.k_buffers[layer].normal_()
        pool.v_buffers[layer].normal_()
    original_k = [buf[[1, 5]].clone() for buf in pool.k_buffers]
    original_v = [buf[[1, 5]].clone() for buf in pool.v_buffers]
    host = HostKVPool(pool, 6)
    assert HostKVPool.pages_for_bytes(pool, 2 * 3 * 4 * 2 * 5 * 4 * 10) == 10
    host.write_back([1, 5], [4, 0])
    for buf in [*pool.k_buffers, *pool.v_buffers]:
        buf[[1, 5]] = 0
    assert host.load_back([4, 0], [6, 2]).done()
    for layer in range(3):
        assert torch.equal(pool.k_buffers[layer][[6, 2]], original_k[layer])
        assert torch.equal(pool.v_buffers[layer][[6, 2]], original_v[layer])
