r"""Pinned host staging for the small host-to-device copies of every step.

A `non_blocking` copy from pageable host memory (a numpy array, a fresh torch CPU tensor) is not
asynchronous: CUDA stages pageable memory through a driver buffer and may synchronize with the
stream first, so under overlap scheduling the launch of step N+1 waits for step N to finish and
the GPU idles while the rest of the launch runs (measured on the lease at 168 decodes of 2,730
tokens: most of the host's time per step sat in `.to()` and `copy_()`). Copies from pinned memory
are truly asynchronous; this ring of pinned memory makes every per-step upload one of those.

    ring  |== lap 2: new ==|....free....|== lap 1: older, fenced ==|
          0                ^ next                                   capacity

Allocations run forward through the ring and wrap to 0. Each belongs to a `StagedCopies`: the
host tensors one consumer stages and then copies (the batch layout and FlashInfer's plan, the
graph inputs, one index tensor). Closing it records one fence after those copies are enqueued;
a region is written again only after its fence completed. Only the consumer knows when its
copies are enqueued, so nothing else fences its regions (a fence recorded by another upload in
between would not cover a copy enqueued after it).

A region whose copies are not yet enqueued when the ring comes round (its StagedCopies still
open: a consumer holding staged tensors for a whole lap) is never waited for: the ring moves to
a fresh buffer instead. The old one stays alive in the tensors handed out, and PyTorch's pinned
allocator does not reuse freed pinned memory before the copies recorded on it ran. Growing for
an allocation larger than the ring works the same way. Laps are long (tens of MiB against a few
hundred KiB a step), so a fence is long done when its region comes round, and nothing waits in
practice.
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
class _Region:
    """One allocation from `start` in the ring's buffer of generation `lap`; `fence` is set when
    its StagedCopies closes (after the copies that read it were enqueued)."""

    lap: int
    start: int
    fence: Fence | None = None


class StagedCopies:
    """Host tensors staged for one consumer's copies; `close()` once those copies are enqueued
    (or use it as a context manager). Closing twice is harmless."""

    __slots__ = ("_staging", "_regions")

    def __init__(self, staging: PinnedStaging) -> None:
        self._staging = staging
        self._regions: list[_Region] = []

    def host(self, values: np.ndarray) -> torch.Tensor:
        """A pinned CPU tensor holding a copy of `values`, valid until this is closed and its
        copies ran."""
        out, region = self._staging._stage(values)
        self._regions.append(region)
        return out

    def upload(self, values: np.ndarray) -> torch.Tensor:
        """`values` on the device, copied asynchronously from the ring."""
        return self.host(values).to(self._staging.device, non_blocking=True)

    def close(self) -> None:
        if not self._regions:
            return
        fence = self._staging._new_fence()
        fence.record()
        for region in self._regions:
            region.fence = fence
        self._regions = []

    def __enter__(self) -> StagedCopies:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        self._buffer = self._allocate(capacity)
        self._next = 0
        self._lap = 0
        self._regions: deque[_Region] = deque()  # allocation order; earlier laps first

    @property
    def capacity(self) -> int:
        return self._buffer.numel()

    def begin(self) -> StagedCopies:
        return StagedCopies(self)

    def upload(self, values: np.ndarray) -> torch.Tensor:
        """`values` on the device: one staged copy, fenced right after it."""
        with self.begin() as staged:
            return staged.upload(values)

    def _stage(self, values: np.ndarray) -> tuple[torch.Tensor, _Region]:
        values = np.ascontiguousarray(values)
        region = self._reserve(max(values.nbytes, 1))
        view = self._buffer[region.start : region.start + values.nbytes]
        out = view.view(_torch_dtype(values.dtype)).view(values.shape)
        out.numpy()[...] = values
        return out, region

    def _reserve(self, size: int) -> _Region:
        if size > self.capacity:
            self._replace(max(size, 2 * self.capacity))
        start = self._next
        if start + size > self.capacity:  # wrap: the next lap starts at 0
            self._lap += 1
            start = 0
        if not self._free_up_to(start + size):
            self._replace(self.capacity)
            start = 0
        self._next = -(-(start + size) // ALIGN) * ALIGN
        region = _Region(self._lap, start)
        self._regions.append(region)
        return region

    def _free_up_to(self, end: int) -> bool:
        """Waits for the previous lap's regions that [.., end) overlaps, and for all that is
        left of older laps (past the previous lap's end: they are in the way of the in-order
        walk); False (waiting for nothing more) at one whose copies are not enqueued yet."""
        regions = self._regions
        lap = self._lap
        while regions and (
            regions[0].lap < lap - 1 or (regions[0].lap < lap and regions[0].start < end)
        ):
            fence = regions[0].fence
            if fence is None:
                return False
            fence.synchronize()
            regions.popleft()
        return True

    def _replace(self, capacity: int) -> None:
        """A fresh buffer; the old one lives on in the tensors handed out from it, and PyTorch's
        pinned allocator keeps it from reuse until the copies recorded on it ran."""
        self._buffer = self._allocate(capacity)
        self._regions.clear()
        self._next = 0
        self._lap += 1

    def _allocate(self, capacity: int) -> torch.Tensor:
        return torch.empty(capacity, dtype=torch.uint8, pin_memory=self._pin)


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


def begin_staging(device: torch.device) -> StagedCopies | None:
    """Staged copies on the device's ring; None off the GPU."""
    staging = staging_for(device)
    return None if staging is None else staging.begin()


def index_tensor(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """An int64 index tensor on `device`, copied without waiting for the device's queue."""
    staging = staging_for(device)
    if staging is None:
        return torch.tensor(values, dtype=torch.int64).to(device, non_blocking=True)
    return staging.upload(np.asarray(values, dtype=np.int64))
