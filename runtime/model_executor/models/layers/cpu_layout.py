"""The weight layout the CPU's matrix products want (kernels/cpu/blas_linear.py): float32 weights
of the linear layers and the LM head stored column-major, so numpy's BLAS reads W^T contiguously."""

from __future__ import annotations

import torch
from torch import nn

from .....kernels.cpu.blas_linear import column_major
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
