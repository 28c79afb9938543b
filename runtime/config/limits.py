"""The runtime's batch limits, resolved once the KV pool is sized: what `None` options become.

`max_running_requests`, `chunked_prefill_size` and `cuda_graph_max_bs` default to `None` in
`ServerArgs`; a value the user set always wins. On the CPU the defaults are fixed (256, 2048).
On a GPU they follow SGLang's derivation:

    max_running_requests  min(clamp(pool_tokens / context_len * 512, 2048, 4096), pool_tokens // 2)
                          (SGLang's request-slot pool size, capped at two tokens per request)
    chunked_prefill_size  from the GPU's memory: < 35 GiB 2048, < 60 GiB 4096, < 160 GiB 8192,
                          else 16384 (an H100 or H200 gets 8192)
    cuda_graph_max_bs     min(max_running_requests, a cap from the GPU's memory): < 20 GiB 8,
                          < 35 GiB 24, < 60 GiB 32, else 512

The graph cap departs from SGLang on 60-160 GiB GPUs (SGLang: 256 at tp < 4): the FlashInfer
workspaces are sized from the configured batch, so 512-row graphs fit there, and decode-heavy
workloads run batches past 256. Torch-free: the model runner passes the pool size and the GPU's
memory, and tests pass made-up ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .server_args import ServerArgs

GIB = 1 << 30
CPU_MAX_RUNNING_REQUESTS = 256
CPU_CHUNKED_PREFILL_SIZE = 2048
# Without a GPU no graph is captured; this only keeps the field meaningful (and the old value).
CPU_CUDA_GRAPH_MAX_BS = 256
# SGLang's request-slot pool: 512 requests per context length of KV tokens, within these bounds.
REQUESTS_PER_CONTEXT = 512
MIN_DERIVED_RUNNING = 2048
MAX_DERIVED_RUNNING = 4096


@dataclass(frozen=True, slots=True)
class GpuTier:
    """Defaults for GPUs with less than `below_gib` of memory."""

    below_gib: float
    chunked_prefill_size: int
    cuda_graph_cap: int


GPU_TIERS = (
    GpuTier(20, 2048, 8),  # T4, RTX 4080
    GpuTier(35, 2048, 24),  # A10, RTX 4090
    GpuTier(60, 4096, 32),  # A100 40GB, L40
    GpuTier(160, 8192, 512),  # A100 80GB, H100, H200
    GpuTier(float("inf"), 16384, 512),  # B200, MI300
)


@dataclass(frozen=True, slots=True)
class RuntimeLimits:
    max_running_requests: int
    chunked_prefill_size: int
    cuda_graph_max_bs: int


def resolve_limits(
    args: ServerArgs, *, pool_tokens: int, context_len: int, gpu_memory_bytes: int | None
) -> RuntimeLimits:
    """The limits this runtime runs with: the user's where set, else derived (module docstring).
    `gpu_memory_bytes` is the GPU's total memory, None on the CPU."""
    for name in ("max_running_requests", "chunked_prefill_size", "cuda_graph_max_bs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if gpu_memory_bytes is None:
        running = args.max_running_requests or CPU_MAX_RUNNING_REQUESTS
        return RuntimeLimits(
            max_running_requests=running,
            chunked_prefill_size=args.chunked_prefill_size or CPU_CHUNKED_PREFILL_SIZE,
            cuda_graph_max_bs=args.cuda_graph_max_bs or min(CPU_CUDA_GRAPH_MAX_BS, running),
        )
    tier = next(t for t in GPU_TIERS if gpu_memory_bytes < t.below_gib * GIB)
    running = args.max_running_requests or derived_max_running(pool_tokens, context_len)
    return RuntimeLimits(
        max_running_requests=running,
        chunked_prefill_size=args.chunked_prefill_size or tier.chunked_prefill_size,
        cuda_graph_max_bs=args.cuda_graph_max_bs or min(tier.cuda_graph_cap, running),
    )


def derived_max_running(pool_tokens: int, context_len: int) -> int:
    slots = pool_tokens * REQUESTS_PER_CONTEXT // max(context_len, 1)
    slots = min(max(slots, MIN_DERIVED_RUNNING), MAX_DERIVED_RUNNING)
    return max(1, min(slots, pool_tokens // 2))
