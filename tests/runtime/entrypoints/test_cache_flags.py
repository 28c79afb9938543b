"""--prefix-cache and --radix-eviction-policy: the CLI offers the registries' keys, rejects other
values with the choices listed, and an Engine built with each value really runs that cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from radixserve.radix_cache import (
    CACHE_REGISTRY,
    EVICTION_POLICIES,
    LFUPolicy,
    LRUPolicy,
    NaiveCache,
    RadixCache,
)
from radixserve.radix_cache.block_hash_cache import BlockHashCache
from radixserve.runtime.config.model_source import resolve_model_source
from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.config.tokenizer import gguf_tokenizer_dir
from radixserve.runtime.entrypoints.components import build_cache
from radixserve.runtime.entrypoints.engine import Engine
from radixserve.runtime.entrypoints.launch_server import build_parser, parse_args
from tests.runtime.tiny_models import build_tiny_model

# --- the command line ----------------------------------------------------------------------------


def test_choices_are_the_registry_keys() -> None:
    actions = {a.dest: a for a in build_parser()._actions}
    assert tuple(actions["prefix_cache"].choices) == tuple(CACHE_REGISTRY)
    assert tuple(actions["radix_eviction_policy"].choices) == tuple(EVICTION_POLICIES)
    assert set(CACHE_REGISTRY) == {"radix", "block_hash", "naive"}
    assert set(EVICTION_POLICIES) == {"lru", "lfu"}  # SGLang's --radix-eviction-policy choices


def test_flags_parse_to_server_args() -> None:
    args = parse_args(["--prefix-cache", "block_hash", "--radix-eviction-policy", "lfu"])
    assert args == ServerArgs(prefix_cache="block_hash", radix_eviction_policy="lfu")
    assert (ServerArgs().prefix_cache, ServerArgs().radix_eviction_policy) == ("radix", "lru")


@pytest.mark.parametrize(
    ("flag", "value", "choices"),
    [
        ("--prefix-cache", "lru", "'radix', 'block_hash', 'naive'"),
        ("--radix-eviction-policy", "priority", "'lru', 'lfu'"),
    ],
)
def test_unknown_value_is_rejected_with_the_choices(
    flag: str, value: str, choices: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid choice: '{value}'" in err and choices in err


# --- building the cache from the flags (no model) ----------------------------------------------


@pytest.mark.parametrize(
    ("options", "cls", "policy"),
    [
        ({}, RadixCache, LRUPolicy),
        ({"radix_eviction_policy": "lfu"}, RadixCache, LFUPolicy),
        ({"prefix_cache": "block_hash"}, BlockHashCache, None),
        ({"prefix_cache": "naive"}, NaiveCache, None),
        ({"disable_radix_cache": True}, NaiveCache, None),
    ],
)
def test_build_cache_follows_the_flags(options: dict, cls: type, policy: type | None) -> None:
    cache = build_cache(ServerArgs(page_size=4, **options), num_pages=32)
    assert type(cache) is cls and cache.page_size == 4 and cache.num_pages == 32
    if policy is not None:
        assert isinstance(cache, RadixCache) and type(cache.policy) is policy


def test_contradicting_flags_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="evicts least recently used first.*'lfu'"):
        build_cache(ServerArgs(prefix_cache="block_hash", radix_eviction_policy="lfu"), 8)
    with pytest.raises(ValueError, match="conflicts with --prefix-cache block_hash"):
        build_cache(ServerArgs(prefix_cache="block_hash", disable_radix_cache=True), 8)
    with pytest.raises(ValueError, match="unknown prefix cache 'lru'; choose one of: radix"):
        build_cache(ServerArgs(prefix_cache="lru"), 8)
    with pytest.raises(ValueError, match="unknown eviction policy 'fifo'; choose one of: lru, lfu"):
        build_cache(ServerArgs(radix_eviction_policy="fifo"), 8)


# --- an Engine on a tiny model: the flags reach the scheduler's cache ---------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    # Any tokenizer decodes the tiny model's ids (< 320); SmolLM2's is converted once and cached.
    gguf_path = resolve_model_source(None).gguf_path
    assert gguf_path is not None
    return gguf_tokenizer_dir(gguf_path)


@pytest.mark.parametrize(
    ("options", "cls", "policy", "shares"),
    [
        ({"radix_eviction_policy": "lfu"}, RadixCache, LFUPolicy, True),
        ({"radix_eviction_policy": "lru"}, RadixCache, LRUPolicy, True),
        ({"prefix_cache": "block_hash"}, BlockHashCache, None, True),
        ({"prefix_cache": "naive"}, NaiveCache, None, False),
    ],
)
def test_engine_runs_the_selected_cache(
    tiny_model: Path,
    tokenizer_dir: str,
    options: dict,
    cls: type,
    policy: type | None,
    shares: bool,
) -> None:
    engine = Engine(
        str(tiny_model),
        tokenizer_path=tokenizer_dir,
        device="cpu",
        page_size=4,
        max_total_tokens=256,
        **options,
    )
    try:
        cache = engine.state.cache
        assert type(cache) is cls and engine.scheduler.cache is cache
        if policy is not None:
            assert isinstance(cache, RadixCache) and type(cache.policy) is policy
        prompt = [(7 * i + 3) % 320 for i in range(41)]  # its last token is always computed
        greedy = {"temperature": 0, "max_new_tokens": 6, "ignore_eos": True}
        first = engine.generate(input_ids=prompt, sampling_params=greedy)
        second = engine.generate(input_ids=prompt, sampling_params=greedy)
        assert isinstance(first, dict) and isinstance(second, dict)
        assert len(first["output_ids"]) == 6 and second["output_ids"] == first["output_ids"]
        # The second request reuses the first's whole prompt pages only where the cache shares.
        assert second["meta_info"]["cached_tokens"] == (40 if shares else 0)
        # Enough distinct prompts to fill the 64-page pool many times over: eviction runs.
        for start in range(8):
            other = [(11 * i + 5 * start + 1) % 320 for i in range(60)]
            engine.generate(input_ids=other, sampling_params=greedy)
        stats = engine.scheduler.stats()
        assert stats.integrity == "ok"
        assert stats.cache.evicted_pages > 0 or not shares
    finally:
        engine.shutdown()
