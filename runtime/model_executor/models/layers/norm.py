"""RMSNorm (float32 accumulation, as HF Llama computes it); the fused kernel on the GPU."""

from __future__ import annotations

import torch
from torch import nn

from .....kernels import fused


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused.available(x):
            return fused.rms_norm(x, self.weight, self.eps)[0]
        if x.dtype == torch.float32:
            # The same ops in the same order as below (bit for bit), with the temporaries
            # reused in place: fewer allocations and calls on the CPU's small decode rows.
            inv_rms = x.pow(2).mean(-1, keepdim=True).add_(self.eps).rsqrt_()
            return (x * inv_rms).mul_(self.weight)
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def forward_with_residual(
        self, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds the residual first and returns (normed, new residual): one fused op on the GPU."""
        if residual is not None and fused.available(x):
            normed, summed = fused.rms_norm(x, self.weight, self.eps, residual)
            assert summed is not None
            return normed, summed
        if residual is not None:
            x = x + residual
        return self.forward(x), x
