"""Linear layers that know their tensor-parallel shard.

Each parameter carries a `weight_loader` that copies its shard out of the full checkpoint tensor, so
the models never slice weights themselves. With a group of one every shard is the whole tensor.

    QKVLinear output rows:   [ q (H*D) | k (Hkv*D) | v (Hkv*D) ]     (per rank: H/tp, Hkv/tp heads)
    MergedColumnLinear rows: [ gate (I) | up (I) ]                   (per rank: I/tp each)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .....kernels import fused
from .....kernels.cpu.blas_linear import linear
from .....kernels.cpu.quantized import QuantizedWeight
from ...distributed import tp_group


def product(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    blocks: QuantizedWeight | None = None,
) -> torch.Tensor:
    """x W^T (+ b): the one-row kernel for batch-1 decodes on the GPU (kernels/fused/matvec.py),
    our compiled kernels or numpy's BLAS for float32 on the CPU (over `blocks`, W's GGUF blocks,
    where given and the rows few), else F.linear (chosen by shapes and devices only)."""
    if fused.gemv_applies(x, weight):
        return fused.gemv(x, weight, bias)
    return linear(x, weight, bias, blocks)


def _divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(
            f"{what}={numerator} is not divisible by tensor-parallel size {denominator}"
        )
    return numerator // denominator


class LinearBase(nn.Module):
    """y = x W^T + b over this rank's shard; subclasses define how checkpoint tensors shard."""

    # The weight's GGUF blocks where the model was given them (CausalLM.use_cpu_blocks): the
    # CPU's small-batch products read those instead, to the same result.
    blocks: QuantizedWeight | None = None

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.tp = tp_group()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.weight.weight_loader = self.weight_loader  # type: ignore[attr-defined]
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False)
            self.bias.weight_loader = self.weight_loader  # type: ignore[attr-defined]
        else:
            self.register_parameter("bias", None)

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
    ) -> None:
        copy_weight_checked(param.data, loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return product(x, self.weight, self.bias, self.blocks)


class ReplicatedLinear(LinearBase):
    pass


class ColumnParallelLinear(LinearBase):
    """Splits the output dimension; each rank keeps out_features / tp rows."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, _divide(out_features, tp_group().size, "out_features"), bias)

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
    ) -> None:
        rows = param.shape[0]
        copy_weight_checked(param.data, loaded.narrow(0, self.tp.rank * rows, rows))


class RowParallelLinear(LinearBase):
    """Splits the input dimension; partial sums are all-reduced across ranks."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(_divide(in_features, tp_group().size, "in_features"), out_features, bias)

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
    ) -> None:
        if param.dim() == 1:  # bias is added once, after the reduce
            copy_weight_checked(param.data, loaded)
            return
        cols = param.shape[1]
        copy_weight_checked(param.data, loaded.narrow(1, self.tp.rank * cols, cols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(product(x, self.weight, blocks=self.blocks))

    def reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """This rank's partial product -> the layer's output (summed over ranks, plus bias)."""
        out = self.tp.all_reduce(partial)
        return out if self.bias is None else out + self.bias


class MergedColumnLinear(ColumnParallelLinear):
    """Several column-parallel projections of one input fused into one matmul."""

    def __init__(self, in_features: int, out_sizes: Sequence[int], bias: bool = False) -> None:
        self.out_sizes = list(out_sizes)
        super().__init__(in_features, sum(out_sizes), bias)

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
    ) -> None:
        assert isinstance(shard_id, int)
        size = self.out_sizes[shard_id] // self.tp.size
        offset = sum(self.out_sizes[:shard_id]) // self.tp.size
        copy_weight_checked(
            param.data.narrow(0, offset, size), loaded.narrow(0, self.tp.rank * size, size)
        )


class QKVLinear(ColumnParallelLinear):
    """q, k and v projections fused; shard ids are "q", "k", "v"."""

    def __init__(
        self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, bias: bool
    ) -> None:
        tp = tp_group().size
        self.head_dim = head_dim
        self.local_heads = _divide(num_heads, tp, "num_attention_heads")
        # KV heads are replicated when there are fewer of them than ranks.
        self.local_kv_heads = max(1, num_kv_heads // tp)
        self.kv_replicas = max(1, tp // num_kv_heads)
        out = (self.local_heads + 2 * self.local_kv_heads) * head_dim * tp
        super().__init__(hidden_size, out, bias)

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None
    ) -> None:
        q_size = self.local_heads * self.head_dim
        kv_size = self.local_kv_heads * self.head_dim
        if shard_id == "q":
            offset, size, shard_rank = 0, q_size, self.tp.rank
        elif shard_id in ("k", "v"):
            offset = q_size if shard_id == "k" else q_size + kv_size
            size, shard_rank = kv_size, self.tp.rank // self.kv_replicas
        else:
            raise ValueError(f"unknown qkv shard {shard_id!r}")
        copy_weight_checked(
            param.data.narrow(0, offset, size), loaded.narrow(0, shard_rank * size, size)
        )


def copy_weight_checked(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape:
        raise ValueError(
            f"checkpoint tensor has shape {tuple(src.shape)}, expected {tuple(dst.shape)}"
        )
    dst.copy_(src)
