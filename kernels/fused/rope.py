"""Rotary embedding (neox / rotate-half layout) for q and k in one pass per head (Triton).

For each token t at position p and each head, with x = [x1 | x2] split in halves and the
table rows cos[p], sin[p] (duplicated over both halves, so the first half is read):

    out = [x1 * cos - x2 * sin | x2 * cos + x1 * sin]        (float32, rounded to x's dtype)

q and k may be strided views of the fused QKV projection; the outputs are contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotary_kernel(
    x_ptr,
    out_ptr,
    positions_ptr,
    cos_ptr,
    sin_ptr,
    x_token_stride,
    x_head_stride,
    out_token_stride,
    out_head_stride,
    table_stride,
    HALF: tl.constexpr,
):
    token = tl.program_id(0)
    head = tl.program_id(1)
    position = tl.load(positions_ptr + token)
    offs = tl.arange(0, HALF)
    cos = tl.load(cos_ptr + position * table_stride + offs)
    sin = tl.load(sin_ptr + position * table_stride + offs)
    src = x_ptr + token * x_token_stride + head * x_head_stride
    x1 = tl.load(src + offs)
    x2 = tl.load(src + HALF + offs)
    a = x1.to(tl.float32)
    b = x2.to(tl.float32)
    dst = out_ptr + token * out_token_stride + head * out_head_stride
    tl.store(dst + offs, (a * cos - b * sin).to(x1.dtype))
    tl.store(dst + HALF + offs, (b * cos + a * sin).to(x1.dtype))


def _rotate(
    positions: torch.Tensor, x: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor
) -> torch.Tensor:
    tokens, heads, head_dim = x.shape
    out = torch.empty((tokens, heads, head_dim), dtype=x.dtype, device=x.device)
    if tokens:
        _rotary_kernel[(tokens, heads)](
            x,
            out,
            positions,
            cos_table,
            sin_table,
            x.stride(0),
            x.stride(1),
            out.stride(0),
            out.stride(1),
            cos_table.stride(0),
            HALF=head_dim // 2,
        )
    return out


def rotary(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_table: torch.Tensor,
    sin_table: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, H, D], k [T, Hkv, D] (last dim contiguous), positions [T] -> rotated copies."""
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    return _rotate(positions, q, cos_table, sin_table), _rotate(positions, k, cos_table, sin_table)


@triton.jit
def _rotary_store_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    q_out_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slots_ptr,
    positions_ptr,
    cos_ptr,
    sin_ptr,
    q_token_stride,
    k_token_stride,
    v_token_stride,
    table_stride,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HALF: tl.constexpr,
):
    # Programs 0..H-1 of a token rotate its query heads into q_out; programs H..H+Hkv-1 rotate
    # its key heads and copy its value heads straight into the pool at the token's slot.
    token = tl.program_id(0)
    head = tl.program_id(1)
    position = tl.load(positions_ptr + token)
    offs = tl.arange(0, HALF)
    cos = tl.load(cos_ptr + position * table_stride + offs)
    sin = tl.load(sin_ptr + position * table_stride + offs)
    if head < NUM_HEADS:
        src = q_ptr + token * q_token_stride + head * (2 * HALF)
        dst = q_out_ptr + (token * NUM_HEADS + head) * (2 * HALF)
    else:
        kv_head = head - NUM_HEADS
        slot = tl.load(slots_ptr + token)
        src = k_ptr + token * k_token_stride + kv_head * (2 * HALF)
        dst = k_cache_ptr + (slot * NUM_KV_HEADS + kv_head) * (2 * HALF)
        v_src = v_ptr + token * v_token_stride + kv_head * (2 * HALF)
        v_dst = v_cache_ptr + (slot * NUM_KV_HEADS + kv_head) * (2 * HALF)
        tl.store(v_dst + offs, tl.load(v_src + offs))
        tl.store(v_dst + HALF + offs, tl.load(v_src + HALF + offs))
    x1 = tl.load(src + offs)
    x2 = tl.load(src + HALF + offs)
    a = x1.to(tl.float32)
    b = x2.to(tl.float32)
    tl.store(dst + offs, (a * cos - b * sin).to(x1.dtype))
    tl.store(dst + HALF + offs, (b * cos + a * sin).to(x1.dtype))


def check_kv_caches(
    k_cache: torch.Tensor, v_cache: torch.Tensor, dtype: torch.dtype, source: str
) -> None:
    """The paged caches a kernel stores into by flat slot: contiguous, in the dtype of the
    tensor named `source` (the kernels copy without converting)."""
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("the KV caches must be contiguous")
    if k_cache.dtype != dtype or v_cache.dtype != dtype:
        raise ValueError(f"the KV caches ({k_cache.dtype}) must be in {source}'s dtype ({dtype})")


def rotary_and_store(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos_table: torch.Tensor,
    sin_table: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
) -> torch.Tensor:
    """Rotates q [T, H, D] and k [T, Hkv, D] and writes k and v [T, Hkv, D] into the paged
    caches (contiguous, any shape whose flattened rows are [slot, Hkv, D]) at `slots` [T], in
    one launch: the rotary kernels, the two pool stores and q's copy were four. Returns the
    rotated q, contiguous. Every head's last dim must be contiguous, each head packed (head
    stride D), the caches in q's dtype."""
    tokens, heads, head_dim = q.shape
    kv_heads = k.shape[1]
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.stride(2) != 1 or x.stride(1) != head_dim:
            raise ValueError(
                f"{name}'s heads must be packed rows of head_dim (strides {x.stride()})"
            )
    check_kv_caches(k_cache, v_cache, q.dtype, "q")
    q_out = torch.empty((tokens, heads, head_dim), dtype=q.dtype, device=q.device)
    if tokens:
        _rotary_store_kernel[(tokens, heads + kv_heads)](
            q,
            k,
            v,
            q_out,
            k_cache,
            v_cache,
            slots,
            positions,
            cos_table,
            sin_table,
            q.stride(0),
            k.stride(0),
            v.stride(0),
            cos_table.stride(0),
            NUM_HEADS=heads,
            NUM_KV_HEADS=kv_heads,
            HALF=head_dim // 2,
        )
    return q_out
