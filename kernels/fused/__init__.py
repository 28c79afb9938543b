"""Fused Triton kernels for the small per-layer ops and small-batch products, with a switch to
fall back to torch.

RMSNorm (with the residual add folded in), SiLU-and-multiply and rotary embedding are each a
handful of elementwise torch kernels; on the GPU every one of them is a launch and a round trip
through memory. These Triton kernels do each op in one pass. The model's layers keep their torch
code as the reference: they call in here only when `available(x)` says so (a CUDA tensor, Triton
importable, not switched off), and the kernel tests compare the two. Submodules are named apart
from the functions here: importing a submodule sets a package attribute of its name.
"""

from __future__ import annotations

import importlib.util

import torch

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Switches the fused kernels on or off for every layer (benchmarks compare the two)."""
    global _enabled
    _enabled = enabled


def available(x: torch.Tensor) -> bool:
    return _enabled and _HAS_TRITON and x.is_cuda


GEMV_MAX_ROWS = 1  # more rows measured slower than cuBLAS (kernels/fused/matvec.py)
_GEMV_DTYPES = (torch.bfloat16, torch.float16)


def gemv_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether x W^T goes through the one-row product kernel (`gemv`): a decode batch of
    one half-precision row on the GPU. Depends on the shapes only, never on timing,
    so a batch's path is the same on every run."""
    return (
        available(x)
        and x.dim() == 2
        and x.shape[0] == GEMV_MAX_ROWS
        and x.dtype in _GEMV_DTYPES
        and weight.dtype == x.dtype
        and weight.dim() == 2
        and weight.stride(1) == 1
        and x.stride(1) == 1
    )


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x W^T (+ b) for a one-row decode batch (kernels/fused/matvec.py)."""
    from .matvec import gemv as run

    return run(x, weight, bias)


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
    """One decode row's qkv projection, rotary and KV store in one launch -> the rotated q
    (kernels/fused/matvec.py); where `gemv_applies`."""
    from .matvec import qkv_rotary_store as run

    return run(
        x, weight, bias, positions, cos_table, sin_table, k_cache, v_cache, slots, num_heads,
        num_kv_heads,
    )  # fmt: skip


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from .rmsnorm import rms_norm as run

    return run(x, weight, eps, residual)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    from .activation import silu_and_mul as run

    return run(gate_up)


def rotary(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_table: torch.Tensor,
    sin_table: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    from .rope import rotary as run

    return run(positions, q, k, cos_table, sin_table)


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
    from .rope import rotary_and_store as run

    return run(positions, q, k, v, cos_table, sin_table, k_cache, v_cache, slots)
