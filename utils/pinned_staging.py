r"""Pinned host staging for the small host-to-device copies of every step.

A `non_blocking` copy from pageable host memory (a numpy array, a fresh torch CPU tensor) is not
asynchronous: CUDA stages pageable memory through a driver buffer and may synchronize with the
stream first, so under overlap scheduling the launch of step N+1 waits for step N to finish and
the GPU idles while the rest of the launch runs (measured on the lease at 168 decodes of 2,730
tokens: most of the host's time per step sat in `.to()` and `copy_()`). Copies from pinned memory
are truly asynchronous; this ring of pinned memory makes every per-step upload one of those.

    ring  |== lap 2: new ==|....free....|== lap 1: older, fenced ==|
          0                ^ next                                   capacity

Allocations run forward through the ring and wrap to 0. A region is reused only after the event
fenced after the copies that read it has completed; `upload` fences itself, and a caller that
hands `host()` tensors to code that copies them (FlashInfer's plan) calls `fence()` after it.
Laps are long (tens of MiB against a few hundred KiB a step), so the event is long done when its
region comes round again, and nothing waits in practice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

INITIAL_BYTES = 32 * 2**20
ALIGN = 64  # bytes: every allocation starts on a cache line


class Fence(Protocol):
    def record(self) -> Any: ...
    def synchronize(self) -> Any: ...


@dataclass(slots=True)
class _Group:
    """Allocations [start, end) of one lap, read by copies enqueued before `fence`."""

    lap: int
    start: int
    end: int
    fence: Fence | None = None  # None while the group is still open


class PinnedStaging:
    """A ring of pinned host memory for uploads to one CUDA device (see the module docstring).
    `pin=False` and a fence factory make the bookkeeping testable on the CPU."""

    def __init__(
        self,
        device: torch.device,
        capacity: int = INITIAL_BYTES,
        pin: bool = True,
        new_fence: Any = None,
    ) -> None:
        self.device = device
        self._pin = pin
        self._new_fence = new_fence or torch.cuda.Event
        self._buffer = torch.empty(capacity, dtype=torch.uint8, pin_memory=pin)
        self._next = 0
        self._lap = 0
        self._groups: deque[_Group] = deque()

    @property
    def capacity(self) -> int:
        return self._buffer.numel()

    def host(self, values: np.ndarray) -> torch.Tensor:
        """A pinned CPU tensor holding a copy of `values` (valid until its region comes round)."""
        values = np.ascontiguousarray(values)
        size = max(values.nbytes, 1)
        start = self._reserve(size)
        view = self._buffer[start : start + values.nbytes].view(_torch_dtype(values.dtype))
        out = view.view(values.shape)
        out.numpy()[...] = values
        return out

    def upload(self, values: np.ndarray) -> torch.Tensor:
        """`values` on the device, copied asynchronously from the ring."""
        out = self.host(values).to(self.device, non_blocking=True)
        self.fence()
        return out

    def fence(self) -> None:
        """Closes the open group: its regions are free once the copies enqueued so far ran."""
        group = self._groups[-1] if self._groups else None
        if group is not None and group.fence is None:
            fence = self._new_fence()
            fence.record()
            group.fence = fence

    def _reserve(self, size: int) -> int:
        if size > self.capacity:
            self._grow(size)
        start = self._next
        if start + size > self.capacity:  # wrap: the next lap starts at 0
            self.fence()
            self._retire(self._lap)  # what is left of the previous lap lies past this one's end
            self._lap += 1
            start = 0
        self._wait_for(start + size)
        self._next = -(-(start + size) // ALIGN) * ALIGN
        group = self._groups[-1] if self._groups else None
        if group is not None and group.fence is None and group.lap == self._lap:
            group.end = start + size
        else:
            self._groups.append(_Group(self._lap, start, start + size))
        return start

    def _wait_for(self, end: int) -> None:
        """Retires the previous lap's groups that [.., end) would overwrite."""
        groups = self._groups
        while groups and groups[0].lap < self._lap and groups[0].start < end:
            self._pop()

    def _retire(self, before_lap: int) -> None:
        while self._groups and self._groups[0].lap < before_lap:
            self._pop()

    def _pop(self) -> None:
        fence = self._groups.popleft().fence
        if fence is not None:
            fence.synchronize()

    def _grow(self, size: int) -> None:
        """A bigger ring; the old one is dropped once every copy from it has run."""
        self.fence()
        self._retire(self._lap + 1)
        capacity = max(size, 2 * self.capacity)
        self._buffer = torch.empty(capacity, dtype=torch.uint8, pin_memory=self._pin)
        self._next = 0
        self._lap += 1


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


_STAGING: dict[torch.device, PinnedStaging] = {}


def staging_for(device: torch.device) -> PinnedStaging | None:
    """The process's ring for a CUDA device (made at first use); None for other devices, where
    a copy from host memory has nothing to overlap with."""
    if device.type != "cuda":
        return None
    key = torch.device("cuda", device.index if device.index is not None else 0)
    staging = _STAGING.get(key)
    if staging is None:
        staging = _STAGING[key] = PinnedStaging(key)
    return staging


def index_tensor(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """An int64 index tensor on `device`, copied without waiting for the device's queue."""
    staging = staging_for(device)
    if staging is None:
        return torch.tensor(values, dtype=torch.int64).to(device, non_blocking=True)
    return staging.upload(np.asarray(values, dtype=np.int64))
