"""What `ServerArgs`' "auto" choices resolve to on this machine (needs torch, so not in config/)."""

from __future__ import annotations

import os

import torch

from ...kernels.cpu.blas_linear import set_blas_linear
from ...kernels.cpu.blas_threads import BlasThreadGovernor, set_blas_threads
from ..config.server_args import DTYPES, ServerArgs


def resolve_device(args: ServerArgs) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def resolve_dtype(args: ServerArgs) -> torch.dtype:
    if args.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {args.dtype!r}; choose one of {DTYPES}")
    if args.dtype == "auto":
        return torch.float32 if resolve_device(args).type == "cpu" else torch.bfloat16
    return getattr(torch, args.dtype)


# Head sizes FlashInfer's paged kernels are built for (a tiny test model's 16 is not).
FLASHINFER_HEAD_DIMS = (64, 128, 256)


def resolve_attention_backend(args: ServerArgs, head_dim: int | None = None) -> str:
    """ "auto": FlashInfer on a GPU for the head sizes it supports, else the torch reference.
    A FlashInfer choice the model's head size rules out is a clear error at start-up, not a
    kernel error at the first forward pass."""
    if args.attention_backend == "flashinfer" and head_dim not in (None, *FLASHINFER_HEAD_DIMS):
        raise ValueError(
            f"--attention-backend flashinfer supports head_dim {FLASHINFER_HEAD_DIMS}; this model "
            f"has {head_dim}: use --attention-backend torch"
        )
    if args.attention_backend != "auto":
        return args.attention_backend
    if resolve_device(args).type != "cuda":
        return "torch"
    return "flashinfer" if head_dim in (None, *FLASHINFER_HEAD_DIMS) else "torch"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow),
    not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        return os.cpu_count() or 1


def resolve_cpu_threads(args: ServerArgs) -> int:
    """torch intra-op threads of each model process on the CPU: --cpu-threads, else one fewer
    than the CPUs available (the HTTP server and the detokenizer need a core too) shared among
    the tensor-parallel ranks, at least 1."""
    if args.cpu_threads is not None:
        if args.cpu_threads < 1:
            raise ValueError(f"--cpu-threads must be >= 1, got {args.cpu_threads}")
        return args.cpu_threads
    return max(1, (available_cpus() - 1) // max(1, args.tp_size))


def apply_cpu_threads(args: ServerArgs) -> int | None:
    """Sets this process's torch intra-op threads when the model runs on the CPU; returns the
    count set, or None on a GPU (whose host threads only launch kernels)."""
    if resolve_device(args).type != "cpu":
        return None
    threads = resolve_cpu_threads(args)
    torch.set_num_threads(threads)
    return threads


def apply_cpu_blas(args: ServerArgs) -> BlasThreadGovernor | None:
    """Sets up the CPU's matrix products through numpy's BLAS (kernels/cpu): a fixed thread
    count with --cpu-blas-threads N, none with 0, else a governor that follows the machine's
    load (the caller ticks it every step). None where nothing needs ticking."""
    threads = args.cpu_blas_threads
    if threads is not None and threads < 0:
        raise ValueError(f"--cpu-blas-threads must be >= 0, got {threads}")
    if resolve_device(args).type != "cpu" or threads == 0:
        set_blas_linear(False)
        return None
    set_blas_linear(True)
    if threads is not None:
        set_blas_threads(threads)
        return None
    cpus = available_cpus()
    return BlasThreadGovernor(max_threads=cpus // max(1, args.tp_size), cpus=cpus)
