"""Tensor-parallel group state.

A process is rank `rank` of a group of `size` (1 unless `--tp-size` says otherwise). The parallel
layers read their shard from here; collectives run over the device group (NCCL on GPUs, gloo on
the CPU), and small host objects (each step's request slices) over a separate gloo group.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch

COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)  # start-up includes loading the weights


@dataclass(slots=True)
class TensorParallelGroup:
    rank: int = 0
    size: int = 1
    cpu_group: Any = None  # a gloo group for host objects; None in a group of one

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

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's `obj`, on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def min_over_ranks(self, value: int) -> int:
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64)
        torch.distributed.all_reduce(
            tensor, op=torch.distributed.ReduceOp.MIN, group=self.cpu_group
        )
        return int(tensor.item())


_TP_GROUP = TensorParallelGroup()


def tp_group() -> TensorParallelGroup:
    return _TP_GROUP


def set_tp_group(rank: int, size: int, cpu_group: Any = None) -> None:
    _TP_GROUP.rank = rank
    _TP_GROUP.size = size
    _TP_GROUP.cpu_group = cpu_group


def use_loopback_sockets() -> None:
    """All ranks share one host: gloo and NCCL's bootstrap talk over the loopback interface.
    Left to themselves they pick an interface from the hostname, which in a VM may resolve to
    an address that nobody answers on (a connect that waits out the whole timeout)."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")


def init_tensor_parallel(
    rank: int, size: int, init_file: str, device_type: str, base_gpu_id: int = 0
) -> None:
    """Joins the group through a rendezvous file (every rank passes the same path); on GPUs,
    rank r runs on GPU base_gpu_id + r."""
    use_loopback_sockets()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(base_gpu_id + rank)
    torch.distributed.init_process_group(
        backend,
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    cpu_group = (
        torch.distributed.group.WORLD
        if backend == "gloo"
        else torch.distributed.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
    )
    set_tp_group(rank, size, cpu_group)


def destroy_tensor_parallel() -> None:
    """Leaves the group; every rank calls this together."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    set_tp_group(0, 1, None)


def forget_tensor_parallel() -> None:
    """After a rank was lost: NCCL's teardown would wait for it forever, so only the gloo
    (CPU) group, which tolerates a missing peer, is destroyed; NCCL goes with the process."""
    if torch.distributed.is_initialized() and torch.distributed.get_backend() == "gloo":
        torch.distributed.destroy_process_group()
    set_tp_group(0, 1, None)
