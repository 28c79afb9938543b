"""Starts and stops the scheduler and detokenizer processes.

Start-up waits for each child's readiness report; a child that reports an error (a model that
does not load, a bad flag) or dies before reporting makes `start` raise with that error, after
stopping the other child and removing the socket directory, so nothing is left behind.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ..config.server_args import ServerArgs
from ..wire.ipc import IpcPaths
from ..wire.messages import ReadyOut, RuntimeInfo

READY_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 5.0
# On the CPU, two thread pools share the cores: numpy's OpenBLAS (long prefills' products) and
# torch's OpenMP (their attention, widened to the products' threads). Each busy-waits after its
# work by default, OpenBLAS for up to 2^28 cycles (about 0.1 s), taking a core from the other
# pool, from our own kernels' pool and from the HTTP process. On two cores a 256-token prompt's
# attention plus one product took 31.8 ms a layer so, 22.6 ms with both pools sleeping when done
# (two threads each). Read when each library loads, so set before the children start; a value
# the user set stays.
CPU_THREAD_ENVIRONMENT = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "passive"}


class StartupError(RuntimeError):
    pass


def runs_on_cpu(args: ServerArgs) -> bool:
    """Whether the model will run on the CPU, told without torch (this process never imports
    it): "auto" is the CPU where no NVIDIA driver shows."""
    if args.device == "auto":
        return not os.path.exists("/dev/nvidiactl")
    return args.device == "cpu"


@dataclass(slots=True)
class ChildProcesses:
    args: ServerArgs
    paths: IpcPaths = field(default_factory=IpcPaths.create)
    processes: dict[str, BaseProcess] = field(default_factory=dict)
    reported: RuntimeInfo | None = None  # what the first scheduler reported (replicas agree)

    @property
    def info(self) -> RuntimeInfo:
        if self.reported is None:
            raise RuntimeError("the processes have not reported ready yet")
        return self.reported

    def start(self) -> RuntimeInfo:
        from ..detokenizer.process import run_detokenizer_process
        from ..scheduler.process import run_scheduler_process

        ctx = mp.get_context("spawn")
        if runs_on_cpu(self.args):
            for name, value in CPU_THREAD_ENVIRONMENT.items():
                os.environ.setdefault(name, value)  # the children inherit it
        pipes: dict[str, Connection] = {}
        dp_size = self.args.dp_size
        if dp_size < 1:
            raise StartupError(f"dp_size must be >= 1, got {dp_size}")
        # (name, target, its ServerArgs, arguments after the readiness pipe)
        children: list[tuple[str, Any, ServerArgs, tuple[Any, ...]]] = []
        for dp_rank in range(dp_size):
            name = "scheduler" if dp_size == 1 else f"scheduler-{dp_rank}"
            # Each replica (and its tensor-parallel ranks) on GPUs of its own.
            args = self.args.replace(
                base_gpu_id=self.args.base_gpu_id + dp_rank * self.args.tp_size
            )
            children.append((name, run_scheduler_process, args, (dp_rank,)))
        children.append(("detokenizer", run_detokenizer_process, self.args, ()))
        for name, target, child_args, extra in children:
            reader, writer = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=target,
                args=(child_args, self.paths, writer, *extra),
                name=f"radixserve-{name}",
                daemon=True,
            )
            process.start()
            writer.close()
            self.processes[name] = process
            pipes[name] = reader
        try:
            for name, reader in pipes.items():
                report = self._wait_ready(name, reader)
                if self.reported is None and report.info is not None:
                    self.reported = report.info  # replicas report the same model and pool
        except BaseException:
            self.stop()
            raise
        return self.info

    def _wait_ready(self, name: str, reader: Connection) -> ReadyOut:
        process = self.processes[name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if reader.poll(0.2):
                try:
                    report: ReadyOut = reader.recv()
                except EOFError:
                    break
                if not report.ok:
                    raise StartupError(f"{name} failed to start: {report.error}")
                return report
            if not process.is_alive():
                break
        code = process.exitcode
        raise StartupError(f"{name} process exited during start-up (exit code {code})")

    def dead_child(self) -> str | None:
        """Name and exit code of a child that has died, if any."""
        for name, process in self.processes.items():
            if not process.is_alive():
                return f"{name} process died (exit code {process.exitcode})"
        return None

    def stop(self) -> None:
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)
        self.paths.remove()
