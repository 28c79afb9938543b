"""How many threads numpy's BLAS may use, from how busy the machine is right now.

Two threads spread a GEMV over both cores of the 2-core development machine (1.7x at one row;
blas_linear.py), but while another process kept one core busy the same products with two threads
took 2.8x as long as with one (91 vs 33 ms a step: each thread waits for the other, which waits
for its core). llama.cpp fixes its thread count at start; here `BlasThreadGovernor` looks at the
machine about once a second: the CPU time all processes spent (/proc/stat) less this process's
own is what the others use, and BLAS gets the cores they leave free (at least one, at most
`max_threads`). The first decision comes after a tenth of a second: a run that starts right after
start-up (an offline Engine's first batch, a benchmark) otherwise spent its first second on one
BLAS thread (a batch-1 step's products about 30 ms instead of 21). A window in which this
process sat idle says what the others did while it waited, not what they will do when it runs:
bench_cpu_peers' llama.cpp server, busy on both cores until a moment before radixserve's next
workload, had the first second of that workload run on one thread (a 96-token prefill 670-690 ms
against 400-420, the next decode steps 90-100 ms against 55). So a tick after such a pause starts
a new window, decided after a tenth of a second again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .small_gemm import numpy_openblas_controllers, set_small_gemm_threads

PROC_STAT = "/proc/stat"
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
IDLE_FIELDS = (3, 4)  # idle and iowait, of the fields after "cpu" in /proc/stat's first line
# Ticks come before every step; this long between two, with under a quarter of a core used by this
# process meanwhile, is a pause for want of work (a long prefill step between them keeps the
# process busy on all its threads).
PAUSE_S = 0.2
PAUSE_OWN_CPUS = 0.25


def machine_busy_seconds(path: str = PROC_STAT) -> float | None:
    """CPU seconds all processes have spent busy since boot (every field but idle and iowait,
    steal included: time the hypervisor gave to others is not ours either); None without
    /proc/stat."""
    try:
        with open(path, encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(v for i, v in enumerate(fields) if i not in IDLE_FIELDS)
    return busy / USER_HZ


def own_cpu_seconds() -> float:
    """CPU seconds of this process, all its threads."""
    times = os.times()
    return times.user + times.system


_threads_in_force: int | None = None  # see blas_threads_in_force


def set_blas_threads(threads: int) -> None:
    """numpy's BLAS thread count (through threadpoolctl), and our small-batch kernel's."""
    global _threads_in_force
    for controller in numpy_openblas_controllers():
        controller.set_num_threads(threads)
    set_small_gemm_threads(threads)
    _threads_in_force = threads


def blas_threads_in_force() -> int | None:
    """The thread count last set for the products (the governor's decision, or the fixed
    --cpu-blas-threads); None while the products' threads were never set (BLAS path off). Large
    torch ops (long prompts' attention) may widen to it: torch's own threads stay at
    --cpu-threads (1 on two cores), where its many small ops are fastest."""
    return _threads_in_force


@dataclass(slots=True)
class _Sample:
    wall: float
    machine: float
    own: float


class BlasThreadGovernor:
    """Sets BLAS's threads to the cores other processes leave free; `tick()` before each step
    (it samples at most every `interval` seconds, the first time after `first_interval`). The
    readers are parameters for tests."""

    def __init__(
        self,
        max_threads: int,
        cpus: int,
        interval: float = 1.0,
        first_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        machine: Callable[[], float | None] = machine_busy_seconds,
        own: Callable[[], float] = own_cpu_seconds,
        apply: Callable[[int], None] = set_blas_threads,
    ) -> None:
        self.max_threads = max(1, max_threads)
        self.cpus = cpus
        self.interval = interval
        self.first_interval = first_interval
        self._window = first_interval  # the current sampling window: `interval` after the first
        self._clock, self._machine, self._own, self._apply = clock, machine, own, apply
        self.threads = 1
        self._apply(1)  # until the first sample says the machine is free
        self._last = self._sample()
        self._previous_tick = (self._clock(), self._own())

    def tick(self) -> int:
        """The thread count now in force (re-decided once `interval` has passed; after a pause,
        `first_interval` after it ends)."""
        now, own = self._clock(), self._own()
        since, own_since = now - self._previous_tick[0], own - self._previous_tick[1]
        self._previous_tick = (now, own)
        if since > PAUSE_S and own_since < PAUSE_OWN_CPUS * since:
            self._last, self._window = self._sample(), self.first_interval
            return self.threads
        if self._last is None or now - self._last.wall < self._window:
            return self.threads
        sample = self._sample()
        if sample is None:
            return self.threads
        self._window = self.interval
        others = (sample.machine - self._last.machine) - (sample.own - self._last.own)
        others_cpus = max(0.0, others / (sample.wall - self._last.wall))
        threads = min(self.max_threads, max(1, int(self.cpus - others_cpus + 0.5)))
        self._last = sample
        if threads != self.threads:
            self.threads = threads
            self._apply(threads)
        return self.threads

    def _sample(self) -> _Sample | None:
        machine = self._machine()
        return None if machine is None else _Sample(self._clock(), machine, self._own())
