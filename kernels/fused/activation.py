"""SiLU(gate) * up over a fused [gate | up] projection, in one pass (Triton).

Rounding follows torch: SiLU is computed in float32 and rounded to the activation dtype, then
the product is computed in float32 and rounded again.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, x_stride, out_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * x_stride + n_cols + cols, mask=mask, other=0.0)
    g32 = gate.to(tl.float32)
    silu = (g32 * tl.sigmoid(g32)).to(gate.dtype)
    out = silu.to(tl.float32) * up.to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols, out.to(gate.dtype), mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """[..., 2N] -> [..., N]."""
    shape = gate_up.shape
    x2 = gate_up.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows, n_cols = x2.shape[0], x2.shape[1] // 2
    out = torch.empty((rows, n_cols), dtype=gate_up.dtype, device=gate_up.device)
    if rows:
        grid = (rows, triton.cdiv(n_cols, BLOCK))
        _silu_and_mul_kernel[grid](x2, out, x2.stride(0), out.stride(0), n_cols, BLOCK=BLOCK)
    return out.view(*shape[:-1], n_cols)
