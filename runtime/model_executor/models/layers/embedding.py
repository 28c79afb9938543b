"""Vocabulary-parallel embedding and LM head.

Each rank holds vocab_size / tp rows; lookups outside the shard are zeroed and all-reduced, and the
head's partial logits are gathered along the vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .....kernels.cpu.quantized import QuantizedWeight
from ...distributed import tp_group
from .linear import product


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.tp = tp_group()
        self.vocab_size = vocab_size
        self.shard_size = -(-vocab_size // self.tp.size)
        self.shard_start = self.tp.rank * self.shard_size
        self.weight = nn.Parameter(torch.empty(self.shard_size, hidden_size), requires_grad=False)
        self.weight.weight_loader = self.weight_loader  # type: ignore[attr-defined]

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
    ) -> None:
        if loaded.shape[0] != self.vocab_size or loaded.shape[1] != param.shape[1]:
            raise ValueError(
                f"embedding has shape {tuple(loaded.shape)}, expected ({self.vocab_size}, {param.shape[1]})"
            )
        rows = min(self.shard_size, self.vocab_size - self.shard_start)
        param.data.zero_()
        param.data[:rows].copy_(loaded.narrow(0, self.shard_start, rows))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.shard_start
        outside = (local < 0) | (local >= self.shard_size)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        out = out.masked_fill(outside.unsqueeze(-1), 0)
        return self.tp.all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    # The weight's GGUF blocks where the model was given them (CausalLM.use_cpu_blocks): the
    # CPU's small-batch products read those instead, to the same result.
    blocks: QuantizedWeight | None = None

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> float32 logits [N, vocab_size]."""
        logits = product(hidden, self.weight, blocks=self.blocks)
        logits = self.tp.all_gather_last_dim(logits)
        return logits[:, : self.vocab_size].float()
