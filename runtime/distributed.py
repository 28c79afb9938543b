"""Tensor-parallel group state.

Today every process is rank 0 of a group of one; the parallel layers already read their shard from
here so that adding NCCL later changes this module, not the models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class TensorParallelGroup:
    rank: int = 0
    size: int = 1

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return tensor
        torch.distributed.all_reduce(tensor)
        return tensor

    def all_gather_last_dim(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        torch.distributed.all_gather(parts, tensor)
        return torch.cat(parts, dim=-1)


_TP_GROUP = TensorParallelGroup()


def tp_group() -> TensorParallelGroup:
    return _TP_GROUP


def set_tp_group(rank: int, size: int) -> None:
    _TP_GROUP.rank = rank
    _TP_GROUP.size = size
