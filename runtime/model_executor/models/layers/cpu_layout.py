"""The weight layout the CPU's matrix products want: row-major (torch's own) for our small-batch
kernel (kernels/cpu/small_gemm.py; OpenBLAS's prefill GEMMs take it as fast), else column-major
for the float32 weights of the linear layers and the LM head, so that numpy's BLAS reads W^T
contiguously (kernels/cpu/blas_linear.py)."""

from __future__ import annotations

import torch
from torch import nn

from .....kernels.cpu.blas_linear import column_major
from .....kernels.cpu.small_gemm import small_gemm
from .embedding import ParallelLMHead
from .linear import LinearBase


def column_major_weights(model: nn.Module) -> int:
    """Re-lays out every float32 linear and LM-head weight in place (a tied head and embedding
    share one tensor: once); returns how many tensors were re-laid out."""
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, LinearBase | ParallelLMHead):
            continue
        weight = module.weight
        if weight.dtype == torch.float32 and weight.dim() == 2 and id(weight) not in seen:
            seen.add(id(weight))
            column_major(weight)
    return len(seen)


def lay_out_cpu_weights(model: nn.Module) -> str:
    """Builds (or loads) the small-batch kernel and lays the weights out for the products that
    will run: returns "row-major" or "column-major"."""
    if small_gemm() is not None:
        return "row-major"
    column_major_weights(model)
    return "column-major"
