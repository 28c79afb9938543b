"""The matrix-vector product of a one-row decode batch on the GPU (Triton).

At batch 1 a decode step of an 8B model reads 15 GB of weights and does little else: its speed is
the speed at which the products stream their weights. cuBLAS's kernels for one row leave part of
the bandwidth unused, most on the small matrices: measured on the H200 over the Llama-3.1-8B
products, each replayed from a CUDA graph with its weights out of L2 (benchmarks/bench_gpu_gemv.py):

    product              cuBLAS              this kernel
    qkv_proj  6144x4096  16.5 us, 3.05 TB/s  14.0 us, 3.60 TB/s
    o_proj    4096x4096  13.2 us, 2.53 TB/s  10.0 us, 3.35 TB/s
    gate_up  28672x4096  63.0 us, 3.73 TB/s  54.7 us, 4.29 TB/s
    down     4096x14336  32.2 us, 3.65 TB/s  28.9 us, 4.07 TB/s
    lm_head 128256x4096  250 us,  4.20 TB/s  232 us,  4.53 TB/s
    a whole step's products (32 layers and the head): 4.28 ms against 3.81

Each program computes BLOCK_N outputs, streaming its BLOCK_N weight rows once in BLOCK_K-wide
slices (16-byte loads along K, marked evict-first: each weight is read once a step) while the
input row, a few KB, comes from L2; products accumulate in float32 and round once to the output
dtype, as cuBLAS's do. The sum order differs from cuBLAS's, so results agree with F.linear to
bf16 rounding, not bit for bit; which kernel a product takes depends on its row count only.

Tried and measured slower on the same products (so not kept): the same kernel over 2 and 4 rows
(1.2-1.7x cuBLAS's time), and RMSNorm or SiLU-and-multiply folded into the product's input (each
program repeats the norm's pass over the row; the folded step took 3.99 ms against 3.81).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gemv_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    y_ptr,
    N,
    K,
    w_stride,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    k_offs = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + k_offs
        k_mask = ks < K
        x = tl.load(x_ptr + ks, mask=k_mask, other=0.0)
        w = tl.load(
            w_ptr + cols[:, None] * w_stride + ks[None, :],
            mask=col_mask[:, None] & k_mask[None, :],
            other=0.0,
            eviction_policy="evict_first",
        )
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    out = tl.sum(acc, axis=1)
    if HAS_BIAS:
        out += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + cols, out.to(y_ptr.dtype.element_ty), mask=col_mask)


def block_config(n: int, k: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for an [n, k] weight: the fastest of a sweep on the H200
    over the Llama-3.1-8B products (benchmarks/bench_gpu_gemv.py): many small programs, each with
    many loads in flight."""
    return (2, 2048, 2)


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """y = x W^T (+ b) for one row x [1, K] and W [N, K] (K contiguous in both) -> [1, N]."""
    n, k = weight.shape
    if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] != k:
        raise ValueError(f"gemv takes one row of {k}; got {tuple(x.shape)}")
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError("gemv needs x and the weight contiguous along K")
    y = torch.empty((1, n), dtype=x.dtype, device=x.device)
    block_n, block_k, warps = config or block_config(n, k)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x,
        weight,
        bias if bias is not None else x,
        y,
        n,
        k,
        weight.stride(0),
        HAS_BIAS=bias is not None,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=warps,
    )
    return y
