"""FlashInfer's two decode kernels for grouped-query attention, side by side: which is faster
at which batch size and context length (the choice `uses_tensor_cores` makes), and the
tensor-core kernel planned as for a CUDA graph, with and without split-KV.

For the Llama-3.1-8B shape (32 query heads, 8 KV heads, head dim 128, bf16, page size 16) it
plans the plain decode kernel (CUDA cores) and the tensor-core kernel (FlashInfer's prefill
kernel on packed query heads) over the same paged KV for each batch size and context length,
and times the kernels of one run with torch.profiler (device time only, so launch overhead does
not hide a 10 us kernel), averaged over `--runs` runs.

    python3 benchmarks/bench_gpu_decode_attention.py [--batch-sizes 1,2,4,...] [--contexts ...]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

PAGE_SIZE = 16
WORKSPACE_BYTES = 512 * 2**20  # ample for a benchmark: split-KV partials at batch 512


def kernel_micros(fn, runs: int) -> float:
    """Mean device time per call of `fn`, from the profiler's kernel events."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    total = sum(
        getattr(e, "device_time_total", 0.0)
        for e in prof.events() or []
        if e.device_type == torch.autograd.DeviceType.CUDA  # pyright: ignore[reportPrivateImportUsage]
    )
    return total / runs


# (label, use_tensor_cores, planned as for a CUDA graph, split-KV disabled)
VARIANTS = (
    ("decode", False, False, False),
    ("tensor cores", True, False, False),
    ("tc, graph plan", True, True, False),
    ("tc, graph, no split", True, True, True),
)


def time_variants(
    flashinfer, workspace: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], bs: int,
    context: int, heads: tuple[int, int, int], runs: int,
) -> list[float]:  # fmt: skip
    """Device microseconds per call (kernels and merge) of each of VARIANTS."""
    num_heads, num_kv_heads, head_dim = heads
    pages_per_req = -(-context // PAGE_SIZE)
    device = workspace.device
    total_pages = cache[0].shape[0]
    indices = torch.randperm(total_pages, device=device, dtype=torch.int32)
    indices = indices[: bs * pages_per_req]
    indptr = torch.arange(bs + 1, dtype=torch.int32) * pages_per_req
    last = torch.full((bs,), context - (pages_per_req - 1) * PAGE_SIZE, dtype=torch.int32)
    q = torch.randn(bs, num_heads, head_dim, dtype=torch.bfloat16, device=device)
    times = []
    for _, tensor_cores, graph, no_split in VARIANTS:
        buffers = {}
        if graph:  # the fixed buffers a graph-enabled wrapper plans into
            buffers = {
                "use_cuda_graph": True,
                "paged_kv_indptr_buffer": indptr.to(device),
                "paged_kv_indices_buffer": indices.clone(),
                "paged_kv_last_page_len_buffer": last.to(device),
            }
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            workspace, "NHD", use_tensor_cores=tensor_cores, **buffers
        )
        extra = {"disable_split_kv": True} if no_split else {}
        wrapper.plan(
            indptr, indices, last, num_heads, num_kv_heads, head_dim, PAGE_SIZE,
            q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16, **extra,
        )  # fmt: skip
        times.append(kernel_micros(lambda w=wrapper: w.run(q, cache), runs))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256,512")
    parser.add_argument("--contexts", default="256,1024,4096")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    import flashinfer  # pyright: ignore[reportMissingImports]  # the lease's carried wheel

    device = torch.device("cuda")
    heads = (32, 8, 128)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    contexts = [int(c) for c in args.contexts.split(",")]
    most_tokens = max(batch_sizes) * max(contexts)
    pages = -(-most_tokens // PAGE_SIZE)
    cache_shape = (pages, PAGE_SIZE, heads[1], heads[2])
    cache = (
        torch.randn(cache_shape, dtype=torch.bfloat16, device=device),
        torch.randn(cache_shape, dtype=torch.bfloat16, device=device),
    )
    workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
    labels = [v[0] for v in VARIANTS]
    print(f"{'batch':>6}{'context':>9}" + "".join(f"{label:>22}" for label in labels))
    for context in contexts:
        for bs in batch_sizes:
            times = time_variants(flashinfer, workspace, cache, bs, context, heads, args.runs)
            print(f"{bs:>6}{context:>9}" + "".join(f"{t:>22.1f}" for t in times))


if __name__ == "__main__":
    main()
