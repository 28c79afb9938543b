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
