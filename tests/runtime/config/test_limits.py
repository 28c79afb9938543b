"""Batch limits left unset resolve from the KV pool and the GPU's memory (SGLang's derivation);
the CPU keeps its fixed defaults and a value the user set always wins."""

from __future__ import annotations

import pytest

from radixserve.runtime.config.limits import GIB, RuntimeLimits, resolve_limits
from radixserve.runtime.config.server_args import ServerArgs

H200 = 140 * GIB  # what an H200 reports (about 139.8 GiB)
LLAMA_8B_POOL = 780_000  # KV tokens of the Llama-3.1-8B shape at mem_fraction_static 0.85


def test_cpu_defaults_are_unchanged() -> None:
    limits = resolve_limits(
        ServerArgs(), pool_tokens=10_000, context_len=8192, gpu_memory_bytes=None
    )
    assert limits == RuntimeLimits(
        max_running_requests=256, chunked_prefill_size=2048, cuda_graph_max_bs=256
    )


def test_cpu_graph_range_follows_a_set_max_running() -> None:
    args = ServerArgs(max_running_requests=64)
    limits = resolve_limits(args, pool_tokens=10_000, context_len=8192, gpu_memory_bytes=None)
    assert (limits.max_running_requests, limits.cuda_graph_max_bs) == (64, 64)


def test_h200_llama_8b_shape() -> None:
    # 780k pool tokens / 131072 context * 512 = 3046 request slots: inside 2048..4096.
    limits = resolve_limits(
        ServerArgs(), pool_tokens=LLAMA_8B_POOL, context_len=131072, gpu_memory_bytes=H200
    )
    assert limits == RuntimeLimits(
        max_running_requests=LLAMA_8B_POOL * 512 // 131072,
        chunked_prefill_size=8192,
        cuda_graph_max_bs=512,
    )


@pytest.mark.parametrize(
    ("pool_tokens", "context_len", "expected"),
    [
        (780_000, 8192, 4096),  # many slots: capped at 4096
        (100_000, 131072, 2048),  # few slots: raised to 2048
        (3000, 2048, 1500),  # a small pool: two tokens per request at least
        (1, 2048, 1),
    ],
)
def test_max_running_follows_the_pool(pool_tokens: int, context_len: int, expected: int) -> None:
    limits = resolve_limits(
        ServerArgs(), pool_tokens=pool_tokens, context_len=context_len, gpu_memory_bytes=H200
    )
    assert limits.max_running_requests == expected
    assert limits.cuda_graph_max_bs == min(512, expected)


@pytest.mark.parametrize(
    ("gpu_gib", "chunk", "graph_cap"),
    [(16, 2048, 8), (24, 2048, 24), (40, 4096, 32), (80, 8192, 512), (192, 16384, 512)],
)
def test_gpu_memory_tiers(gpu_gib: int, chunk: int, graph_cap: int) -> None:
    limits = resolve_limits(
        ServerArgs(), pool_tokens=LLAMA_8B_POOL, context_len=8192, gpu_memory_bytes=gpu_gib * GIB
    )
    assert (limits.chunked_prefill_size, limits.cuda_graph_max_bs) == (chunk, graph_cap)


def test_set_values_win_on_the_gpu() -> None:
    args = ServerArgs(max_running_requests=1024, chunked_prefill_size=4096, cuda_graph_max_bs=160)
    limits = resolve_limits(
        args, pool_tokens=LLAMA_8B_POOL, context_len=8192, gpu_memory_bytes=H200
    )
    assert limits == RuntimeLimits(1024, 4096, 160)


def test_graph_range_follows_a_small_max_running() -> None:
    args = ServerArgs(max_running_requests=48)
    limits = resolve_limits(
        args, pool_tokens=LLAMA_8B_POOL, context_len=8192, gpu_memory_bytes=H200
    )
    assert limits.cuda_graph_max_bs == 48


@pytest.mark.parametrize(
    "name", ["max_running_requests", "chunked_prefill_size", "cuda_graph_max_bs"]
)
def test_non_positive_values_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        resolve_limits(
            ServerArgs().replace(**{name: 0}),
            pool_tokens=1000,
            context_len=512,
            gpu_memory_bytes=None,
        )
