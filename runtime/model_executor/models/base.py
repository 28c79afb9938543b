"""The model seam: what the model runner needs from a causal LM, and nothing else.

The runner builds the model from a `ModelConfig`, fills its weights, sizes the KV pool and the
attention backend from its `attention_geometry`, and calls it once per forward pass:

    runner:  model = ModelClass(config)            (under the runner's device and dtype)
             model.load_weights(checkpoint tensors)
             geometry -> KVPool(num_kv_heads, head_dim), AttentionShape(heads, ..., scale)
    a step:  logits = model(ForwardContext(batch, kv_pool, attention))

It never looks inside the model (its layers, its attention modules), so an architecture is free
to arrange those as it likes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ....kernels.cpu.quantized import QuantizedWeight
from ..model_config import ModelConfig
from .layers.attention import ForwardContext
from .layers.embedding import ParallelLMHead
from .layers.linear import LinearBase


@dataclass(slots=True, frozen=True)
class AttentionGeometry:
    """The attention shape of this rank's shard: the same for every layer."""

    num_heads: int  # query heads on this rank
    num_kv_heads: int  # KV heads on this rank (what the KV pool stores)
    head_dim: int
    softmax_scale: float


class CausalLM(nn.Module, ABC):
    """A decoder-only language model under the paged KV cache.

    Contract:
    - `__init__(config)` builds this tensor-parallel rank's shard (the parallel layers read the
      current `tp_group()`), with parameters on the default device and dtype the runner set.
    - `forward(ctx)` runs the batch in `ctx.batch`: each attention layer writes the new tokens'
      K/V into `ctx.kv_pool` at `batch.out_cache_loc` and attends through `ctx.attention`. It
      returns float32 logits [len(batch.logits_rows), vocab_size] over the whole vocabulary
      (gathered across ranks), one row per entry of `batch.logits_rows`. It must be capturable
      in a CUDA graph: no host syncs, no Python branching on tensor values.
    - `load_weights(weights)` copies checkpoint tensors (Hugging Face names) into this rank's
      shards; ValueError for a tensor that matches no parameter or for a missing one.
    - `attention_geometry` and `config` describe the model to the runner.
    - `use_cpu_blocks(blocks)` (optional): GGUF blocks that stand for some of its float32
      weights bit for bit (model_loader/gguf_blocks.py), for its CPU products to read instead;
      returns how many it uses (none by default).
    """

    config: ModelConfig

    @property
    @abstractmethod
    def attention_geometry(self) -> AttentionGeometry: ...

    @abstractmethod
    def forward(self, ctx: ForwardContext) -> torch.Tensor: ...

    @abstractmethod
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def use_cpu_blocks(self, blocks: dict[str, QuantizedWeight]) -> int:
        """Hands each linear layer and LM head the blocks of its weight (by parameter name)."""
        used = 0
        for name, module in self.named_modules(remove_duplicate=False):
            found = blocks.get(f"{name}.weight")
            if found is not None and isinstance(module, LinearBase | ParallelLMHead):
                module.blocks = found
                used += 1
        return used
