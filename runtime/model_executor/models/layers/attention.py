"""The attention layer: writes this step's K/V into the paged pool, then runs the backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .....kernels.attention.base import AttentionBackend
from ...forward_batch import ForwardBatch
from ...kv_pool import KVPool


@dataclass(slots=True)
class ForwardContext:
    """Everything a layer needs besides its input: passed down the model, never global."""

    batch: ForwardBatch
    kv_pool: KVPool
    attention: AttentionBackend


class PagedAttention(nn.Module):
    def __init__(self, layer_id: int, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scaling = head_dim**-0.5

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: ForwardContext
    ) -> torch.Tensor:
        """q [T, H, D], k/v [T, Hkv, D] -> [T, H * D]."""
        ctx.kv_pool.store(self.layer_id, ctx.batch.out_cache_loc, k, v)
        return self.attend(q, ctx)

    def attend(self, q: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """q [T, H, D] over the pool, whose pages already hold this step's K/V -> [T, H * D]."""
        k_cache, v_cache = ctx.kv_pool.layer(self.layer_id)
        return ctx.attention.forward(q, k_cache, v_cache, self.scaling)
