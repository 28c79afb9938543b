"""The host tier's seam: who copies KV pages between the device pool and the host pool.

The hierarchical cache (hicache.py) is pure bookkeeping: it decides which device page goes to
which host page and back, and asks a `KVMover` to copy. The model executor's `HostKVPool`
implements it over real tensors (pinned host memory and a side stream on a GPU); tests use
`RecordingMover`, which keeps each page's content as a Python value, so a test can prove that
whatever a page held on the device comes back intact.

Ordering contract (what makes the copies safe without the cache waiting for them):
- `write_back(device, host)`: the copy reads the device pages after every device work enqueued
  before the call, and every device work enqueued after the call sees the pages as free to
  overwrite only once the copy has read them. The host pages hold the data for any later
  `load_back` (a mover orders its own copies).
- `load_back(host, device)` returns a `Transfer`; the device pages hold the data once
  `done()` is true, and nothing may read them before (the cache keeps them out of matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Transfer(Protocol):
    def done(self) -> bool:
        """True once the copy has finished (never goes back to False)."""
        ...

    def wait(self) -> None:
        """Blocks until `done()`."""
        ...


class KVMover(Protocol):
    def write_back(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        """Copies device pages to host pages (see the ordering contract above)."""
        ...

    def load_back(self, host_pages: Sequence[int], device_pages: Sequence[int]) -> Transfer:
        """Starts copying host pages to device pages."""
        ...


class DoneTransfer:
    """A copy that finished before its call returned (the CPU's synchronous copies)."""

    __slots__ = ()

    def done(self) -> bool:
        return True

    def wait(self) -> None:
        return None


DONE = DoneTransfer()


class ManualTransfer:
    """A copy that finishes when a test says so (`finish`), or when someone waits for it."""

    __slots__ = ("_done", "_on_finish")

    def __init__(self, on_finish: object = None) -> None:
        self._done = False
        self._on_finish = on_finish

    def done(self) -> bool:
        return self._done

    def finish(self) -> None:
        if not self._done:
            self._done = True
            if callable(self._on_finish):
                self._on_finish()

    def wait(self) -> None:
        self.finish()


class RecordingMover:
    """A mover over two dicts of page contents (page id -> any value), for tests.

    `device[page]` is what a test wrote into a device page; copies move the values. With
    `defer_loads` a load-back's values land only when its transfer finishes (`finish_all`),
    which is how a test holds a load in flight.
    """

    def __init__(self, defer_loads: bool = False) -> None:
        self.device: dict[int, object] = {}
        self.host: dict[int, object] = {}
        self.defer_loads = defer_loads
        self.pending: list[ManualTransfer] = []
        self.written = self.loaded = 0

    def write_back(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        for d, h in zip(device_pages, host_pages, strict=True):
            self.host[h] = self.device.get(d)
        self.written += len(device_pages)

    def load_back(self, host_pages: Sequence[int], device_pages: Sequence[int]) -> Transfer:
        values = [self.host.get(h) for h in host_pages]
        targets = list(device_pages)
        self.loaded += len(targets)

        def land() -> None:
            for d, value in zip(targets, values, strict=True):
                self.device[d] = value

        if not self.defer_loads:
            land()
            return DONE
        transfer = ManualTransfer(land)
        self.pending.append(transfer)
        return transfer

    def finish_all(self) -> None:
        for transfer in self.pending:
            transfer.finish()
        self.pending.clear()


class NoCopy:
    """A mover that copies nothing: the tree's bookkeeping alone (benchmarks, pure tests)."""

    def write_back(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        return None

    def load_back(self, host_pages: Sequence[int], device_pages: Sequence[int]) -> Transfer:
        return DONE
