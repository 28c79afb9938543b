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

from .rope import check_kv_caches


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


@triton.jit
def _qkv_rotary_store_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    q_out_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slots_ptr,
    positions_ptr,
    cos_ptr,
    sin_ptr,
    K,
    w_stride,
    table_stride,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HALF: tl.constexpr,
    PAIRS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Program p owns PAIRS rotate-half pairs (rows j and j + HALF) of one head of the fused qkv
    # output, so it can rotate what it computed: the qkv projection, the rotary kernel and the
    # KV store of _rotary_store_kernel (kernels/fused/rope.py) in one launch, rounded alike.
    pid = tl.program_id(0)
    head = pid // (HALF // PAIRS)
    j = (pid % (HALF // PAIRS)) * PAIRS + tl.arange(0, PAIRS)
    rows_a = head * (2 * HALF) + j
    rows_b = rows_a + HALF
    k_offs = tl.arange(0, BLOCK_K)
    acc_a = tl.zeros([PAIRS, BLOCK_K], dtype=tl.float32)
    acc_b = tl.zeros([PAIRS, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + k_offs
        k_mask = ks < K
        x = tl.load(x_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)[None, :]
        w_mask = k_mask[None, :]
        w_a = tl.load(
            w_ptr + rows_a[:, None] * w_stride + ks[None, :],
            mask=w_mask,
            other=0.0,
            eviction_policy="evict_first",
        )
        w_b = tl.load(
            w_ptr + rows_b[:, None] * w_stride + ks[None, :],
            mask=w_mask,
            other=0.0,
            eviction_policy="evict_first",
        )
        acc_a += w_a.to(tl.float32) * x
        acc_b += w_b.to(tl.float32) * x
    a = tl.sum(acc_a, axis=1)
    b = tl.sum(acc_b, axis=1)
    if HAS_BIAS:
        a += tl.load(bias_ptr + rows_a).to(tl.float32)
        b += tl.load(bias_ptr + rows_b).to(tl.float32)
    dtype = q_out_ptr.dtype.element_ty
    a = a.to(dtype).to(tl.float32)  # the projection's output, rounded as it would be stored
    b = b.to(dtype).to(tl.float32)
    if head < NUM_HEADS + NUM_KV_HEADS:
        position = tl.load(positions_ptr)
        cos = tl.load(cos_ptr + position * table_stride + j)
        sin = tl.load(sin_ptr + position * table_stride + j)
        a, b = a * cos - b * sin, b * cos + a * sin
    if head < NUM_HEADS:
        dst = q_out_ptr + head * (2 * HALF)
    else:
        slot = tl.load(slots_ptr)
        kv_head = (head - NUM_HEADS) % NUM_KV_HEADS
        offset = (slot * NUM_KV_HEADS + kv_head) * (2 * HALF)
        if head < NUM_HEADS + NUM_KV_HEADS:
            dst = k_cache_ptr + offset
        else:
            dst = v_cache_ptr + offset
    tl.store(dst + j, a.to(dtype))
    tl.store(dst + HALF + j, b.to(dtype))


def qkv_rotary_store(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    positions: torch.Tensor,
    cos_table: torch.Tensor,
    sin_table: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
) -> torch.Tensor:
    """For one decode row x [1, K] and the fused qkv weight [(H + 2 Hkv) D, K]: the rotated q
    [1, H, D], with the rotated k and v written into the paged caches at slots[0] (what
    F.linear, kernels/fused/rope.rotary_and_store compute apart, rounded the same way)."""
    n, k = weight.shape
    head_dim = n // (num_heads + 2 * num_kv_heads)
    if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] != k:
        raise ValueError(f"qkv_rotary_store takes one row of {k}; got {tuple(x.shape)}")
    if head_dim * (num_heads + 2 * num_kv_heads) != n or head_dim % 2:
        raise ValueError(f"weight rows {n} are not {num_heads} + 2 x {num_kv_heads} heads")
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError("x and the weight must be contiguous along K")
    check_kv_caches(k_cache, v_cache, x.dtype, "x")
    q_out = torch.empty((1, num_heads, head_dim), dtype=x.dtype, device=x.device)
    pairs, block_k, warps = 1, 2048, 2  # two weight rows a program, as BLOCK_CONFIG
    half = head_dim // 2
    _qkv_rotary_store_kernel[((num_heads + 2 * num_kv_heads) * half // pairs,)](
        x,
        weight,
        bias if bias is not None else x,
        q_out,
        k_cache,
        v_cache,
        slots,
        positions,
        cos_table,
        sin_table,
        k,
        weight.stride(0),
        cos_table.stride(0),
        NUM_HEADS=num_heads,
        NUM_KV_HEADS=num_kv_heads,
        HALF=half,
        PAIRS=pairs,
        HAS_BIAS=bias is not None,
        BLOCK_K=block_k,
        num_warps=warps,
    )
    return q_out


# (BLOCK_N, BLOCK_K, num_warps): the fastest of a sweep on the H200 over the Llama-3.1-8B
# products, the same for each of them (benchmarks/bench_gpu_gemv.py): many small programs, each
# with many loads in flight.
BLOCK_CONFIG = (2, 2048, 2)


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
    block_n, block_k, warps = config or BLOCK_CONFIG
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
