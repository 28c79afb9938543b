"""FlashInfer's two decode kernels for grouped-query attention, side by side: which is faster
at which batch size and context length (the choice `uses_tensor_cores` makes), the
tensor-core kernel planned as for a CUDA graph, with and without split-KV, and our Triton
split-and-merge kernels (kernels/attention/triton_decode.py, with the graphs' split count), for
the batch sizes the CUDA graphs give them (`TRITON_DECODE_MAX_BS`).

For the Llama-3.1-8B shape (32 query heads, 8 KV heads, head dim 128, bf16, page size 16) it
plans the plain decode kernel (CUDA cores) and the tensor-core kernel (FlashInfer's prefill
kernel on packed query heads) over the same paged KV for each batch size and context length,
and times the kernels of one run with torch.profiler (device time only, so launch overhead does
not hide a 10 us kernel), averaged over `--runs` runs.

    python3 benchmarks/bench_gpu_decode_attention.py [--batch-sizes 1,2,4,...] [--contexts ...]
"""

from __future__ import annotations

import argparse
import functools
import itertools

import torch
from torch.profiler import ProfilerActivity, profile

from radixserve.kernels.attention import triton_decode

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
NUM_SMS = 132  # set in main() from the device


def time_variants(
    flashinfer, workspace: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], bs: int,
    context: int, heads: tuple[int, int, int], runs: int, variants: tuple[tuple, ...],
) -> list[float]:  # fmt: skip
    """Device microseconds per call (kernels and merge) of each of `variants`, then of the
    Triton kernels (checked against the last variant's output first)."""
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
    for _, tensor_cores, graph, no_split in variants:
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
    splits = triton_decode.splits_for(bs, num_kv_heads, NUM_SMS)
    part_o, part_lse = triton_decode.partial_buffers(bs, num_heads, head_dim, splits, device)
    args = (indptr.to(device), indices, last.to(device), head_dim**-0.5, splits, part_o, part_lse)
    ours = triton_decode.decode(q, *cache, *args)
    theirs = wrapper.run(q, cache)
    assert (ours.float() - theirs.float()).abs().max().item() < 2e-2, "triton decode disagrees"
    times.append(kernel_micros(lambda: triton_decode.decode(q, *cache, *args), runs))
    return times


def sweep_triton(
    cache: tuple[torch.Tensor, torch.Tensor], bs: int, context: int, runs: int
) -> dict[tuple[int, int, int, int], float]:
    """Device microseconds of the Triton kernels per (programs per SM, block, stages, warps)."""
    num_heads, num_kv_heads, head_dim = 32, 8, 128
    device = cache[0].device
    pages_per_req = -(-context // PAGE_SIZE)
    indices = torch.randperm(cache[0].shape[0], device=device, dtype=torch.int32)
    indices = indices[: bs * pages_per_req]
    indptr = (torch.arange(bs + 1, dtype=torch.int32) * pages_per_req).to(device)
    last = torch.full((bs,), context - (pages_per_req - 1) * PAGE_SIZE, dtype=torch.int32)
    q = torch.randn(bs, num_heads, head_dim, dtype=torch.bfloat16, device=device)
    times = {}
    for per_sm, block, stages, warps in itertools.product((1, 2, 4), (32, 64), (1, 2, 3), (4,)):
        splits = triton_decode.splits_for(bs, num_kv_heads, NUM_SMS, per_sm)
        part_o, part_lse = triton_decode.partial_buffers(bs, num_heads, head_dim, splits, device)
        args = (indptr, indices, last.to(device), head_dim**-0.5, splits, part_o, part_lse)
        run = functools.partial(
            triton_decode.decode, q, *cache, *args, block=block, num_stages=stages,
            num_warps=warps,
        )  # fmt: skip
        times[(per_sm, block, stages, warps)] = kernel_micros(run, runs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256,512")
    parser.add_argument("--contexts", default="256,1024,4096")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--no-graph-plans",
        action="store_true",
        help="leave out FlashInfer's graph-planned variants (on the lease on 2026-12-04 their "
        "run outside a capture failed: 'operation not supported on global/shared address space')",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="time the Triton kernels' configurations (programs per SM, block, stages, warps) "
        "per batch size and context instead",
    )
    args = parser.parse_args()
    variants = tuple(v for v in VARIANTS if not (args.no_graph_plans and v[2]))
    import flashinfer  # pyright: ignore[reportMissingImports]  # the lease's carried wheel

    device = torch.device("cuda")
    global NUM_SMS
    NUM_SMS = torch.cuda.get_device_properties(device).multi_processor_count
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
    if args.sweep:
        for context in contexts:
            for bs in batch_sizes:
                times = sweep_triton(cache, bs, context, args.runs)
                best = sorted(times, key=times.__getitem__)
                print(
                    f"bs {bs} context {context}: "
                    + ", ".join(f"{cfg} {times[cfg]:.1f}" for cfg in best[:6])
                    + f"; default {times[(triton_decode.SPLITS_PER_SM, triton_decode.BLOCK_N, triton_decode.NUM_STAGES, triton_decode.NUM_WARPS)]:.1f}"
                )
        return
    workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
    labels = [v[0] for v in variants] + ["triton split+merge"]
    print(f"{'batch':>6}{'context':>9}" + "".join(f"{label:>22}" for label in labels))
    for context in contexts:
        for bs in batch_sizes:
            times = time_variants(
                flashinfer, workspace, cache, bs, context, heads, args.runs, variants
            )
            print(f"{bs:>6}{context:>9}" + "".join(f"{t:>22.1f}" for t in times))


if __name__ == "__main__":
    main()
