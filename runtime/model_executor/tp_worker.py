"""Tensor parallelism over `--tp-size` processes, one per GPU (or CPU process, over gloo).

Rank 0 lives in the scheduler's process and is what the scheduler sees as its model runner; ranks
1..N-1 are worker processes started here. Each step:

    rank 0: broadcast the step's request slices --> every rank: the same forward pass
            (row-parallel layers all-reduce, the LM head all-gathers the vocabulary)
    rank 0: samples from the full logits; the workers drop theirs

Under overlap scheduling a slice's input may be a placeholder for rank 0's previous sample,
which only rank 0 has: it then broadcasts its samples by request over the device group before
the pass (on GPUs an NCCL broadcast in stream order, so the host still does not wait), and every
rank resolves the placeholders from them.

Workers are plain subprocesses (`python -m radixserve.runtime.tp_worker`): the scheduler process
is a daemon and may not have multiprocessing children. They die with their parent
(PR_SET_PDEATHSIG), and rank 0 checks them before every step, so a lost worker ends the
runtime with a clear error instead of a collective that never completes.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config.model_source import ModelSource
from ..config.server_args import ServerArgs
from ..scheduler.step import RequestSlice, StepHandle, StepRequest, StepResult, StepRunner
from .device import apply_cpu_threads, resolve_device
from .distributed import (
    destroy_tensor_parallel,
    forget_tensor_parallel,
    init_tensor_parallel,
    tp_group,
    use_loopback_sockets,
)

if TYPE_CHECKING:  # the runner imports the model code: at run time only where a rank needs it
    import torch

    from .forward_batch import ForwardBatch
    from .model_config import ModelConfig
    from .model_runner import ModelRunner

PR_SET_PDEATHSIG = 1
STOP = "stop"


class WorkerLostError(RuntimeError):
    """A tensor-parallel worker exited: the group cannot run another step."""

    fatal = True  # the scheduler loop ends the runtime instead of aborting and going on


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class TensorParallelRunner(StepRunner):
    """Rank 0's model runner, driving the worker ranks: every forward pass is announced to the
    workers first. What it reports about the model is rank 0's `ModelRunner`'s (`self.runner`)."""

    def __init__(self, args: ServerArgs) -> None:
        from .model_runner import ModelRunner

        self.size = args.tp_size
        self._dir = tempfile.mkdtemp(prefix="radixserve-tp-")
        init_file = os.path.join(self._dir, "rendezvous")
        device_type = resolve_device(args).type
        payload = json.dumps(dataclasses.asdict(args))
        use_loopback_sockets()  # before the workers start: they inherit the environment
        self.workers = [
            subprocess.Popen(
                [sys.executable, "-m", "radixserve.runtime.model_executor.tp_worker"]
                + ["--rank", str(rank), "--init-file", init_file, "--args", payload],
                preexec_fn=_die_with_parent,
            )
            for rank in range(1, self.size)
        ]
        try:
            init_tensor_parallel(0, self.size, init_file, device_type, args.base_gpu_id)
            self.runner = ModelRunner(args)
        except BaseException:
            self.shutdown()
            raise

    @property
    def context_len(self) -> int:
        return self.runner.context_len

    @property
    def vocab_size(self) -> int:
        return self.runner.vocab_size

    @property
    def num_kv_pages(self) -> int:
        return self.runner.num_kv_pages  # the same on every rank (the smallest pool wins)

    @property
    def model_name(self) -> str:
        return self.runner.model_name

    @property
    def source(self) -> ModelSource:
        return self.runner.source

    @property
    def config(self) -> ModelConfig:
        return self.runner.config

    def _check_workers(self) -> None:
        lost = [(w.pid, w.poll()) for w in self.workers if w.poll() is not None]
        if lost:
            raise WorkerLostError(f"tensor-parallel worker(s) exited (pid, status): {lost}")

    def _send_to_workers(
        self, slices: list[RequestSlice], futures: torch.Tensor | None = None
    ) -> None:
        """The workers run the same forward pass over these slices; with placeholder inputs,
        rank 0's previous samples (`futures`) follow over the device group."""
        self._check_workers()
        if futures is not None and not any(s.has_future for s in slices):
            futures = None
        tp_group().broadcast_object((slices, 0 if futures is None else futures.numel()))
        if futures is not None:
            import torch

            torch.distributed.broadcast(futures, src=0)

    def forward(
        self, slices: Sequence[RequestSlice], futures: torch.Tensor | None = None
    ) -> tuple[ForwardBatch, torch.Tensor]:
        self._send_to_workers(list(slices), futures)
        return self.runner.forward(slices, futures)

    def launch(self, requests: Sequence[StepRequest]) -> StepHandle:
        self._send_to_workers([r.slice for r in requests], self.runner.last_sampled)
        return self.runner.launch(requests)

    def collect(self, handle: StepHandle) -> list[StepResult]:
        return self.runner.collect(handle)

    def shutdown(self) -> None:
        """Stops the workers and leaves the group.

        With every worker alive: a stop message, then all ranks tear the group down together
        (NCCL's teardown waits for its peers, so rank 0 must not wait for the workers' exit
        first). With a worker lost, the group cannot be torn down cleanly: the workers are
        killed and this rank just forgets the group (its process is about to end).
        """
        healthy = all(w.poll() is None for w in self.workers) and tp_group().size > 1
        if healthy:
            try:
                tp_group().broadcast_object(STOP)
            except Exception:  # noqa: BLE001 - a broken group is handled as unhealthy
                healthy = False
        if healthy:
            destroy_tensor_parallel()
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            if not healthy and worker.poll() is None:
                worker.kill()
        if not healthy:
            forget_tensor_parallel()
        shutil.rmtree(self._dir, ignore_errors=True)


def create_model_runner(args: ServerArgs) -> ModelRunner | TensorParallelRunner:
    """A `ModelRunner`, or rank 0 of a tensor-parallel group when `tp_size` > 1."""
    if args.tp_size < 1:
        raise ValueError(f"tp_size must be >= 1, got {args.tp_size}")
    if args.tp_size > 1 and resolve_device(args).type == "cuda":
        import torch

        if args.base_gpu_id + args.tp_size > torch.cuda.device_count():
            raise ValueError(
                f"tp_size={args.tp_size} from GPU {args.base_gpu_id} needs more GPUs than the "
                f"{torch.cuda.device_count()} visible"
            )
    if args.tp_size > 1:
        return TensorParallelRunner(args)
    from .model_runner import ModelRunner

    return ModelRunner(args)


def worker_main(rank: int, init_file: str, args: ServerArgs) -> None:
    import torch

    from .model_runner import ModelRunner

    device_type = resolve_device(args).type
    init_tensor_parallel(rank, args.tp_size, init_file, device_type, args.base_gpu_id)
    apply_cpu_threads(args)  # as rank 0 does in build_runtime
    runner = ModelRunner(args)
    group = tp_group()
    while True:
        message = group.broadcast_object()
        if message == STOP:
            break
        slices, future_rows = message
        futures = None
        if future_rows:  # rank 0's previous samples, which the placeholders stand for
            futures = torch.empty(future_rows, dtype=torch.int64, device=runner.device)
            torch.distributed.broadcast(futures, src=0)
        runner.forward(slices, futures)  # rank 0 samples; this rank contributes its shard
    destroy_tensor_parallel()


def main() -> None:
    parser = argparse.ArgumentParser(description="a tensor-parallel worker rank (internal)")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--init-file", required=True)
    parser.add_argument("--args", required=True, help="ServerArgs as JSON")
    ns = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runtime shuts us down
    worker_main(ns.rank, ns.init_file, ServerArgs(**json.loads(ns.args)))


if __name__ == "__main__":
    main()
