"""y = x W^T (+ b) on the CPU through numpy's BLAS (OpenBLAS in numpy's Linux wheels) where
it is faster than torch's own.

A decode step of a small model on the CPU is mostly matrix-vector products over weights that do
not fit in cache, so it runs at the memory's speed. Measured on the 2-core development machine
(AMD EPYC, AVX2; the 121 products of one SmolLM2-135M step, float32, weights not cache-resident,
`python -m benchmarks.bench_cpu_blas`):

    rows  threads   torch (F.linear)   numpy's OpenBLAS
    1     1         38.1 ms            32.7 ms     torch's GEMV reads about 13 GB/s, OpenBLAS 16
    1     2         38.0 ms            21.9 ms     torch does not spread a GEMV over threads
    16    2         73.5 ms            56.0 ms
    4-64  1         level, or torch faster

OpenBLAS's GEMM does badly on two or three rows (it packs the whole weight matrix per call): one
GEMV per row took 53.5 ms at two rows on one thread (GEMM 76.8, torch 66), 33.3 on two threads
(GEMM 53.4), and 69.3 / 52.4 at three rows. So up to three rows go through one GEMV each, and more
rows through OpenBLAS's GEMM where BLAS may have more than one thread (blas_threads.py decides how
many from one moment to the next), else through torch. That choice is made once per process, not
per thread count now in force: torch and OpenBLAS compute the same float32 sums in different
orders (results agree to float32 rounding, not bit for bit), and which one a product takes should
not depend on the machine's load.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

GEMV_ROWS = 3  # up to this many rows: one GEMV each (above)

_state = {"enabled": True, "gemm": False}


def set_blas_linear(enabled: bool, gemm: bool = False) -> None:
    """Whether CPU products may go through numpy's BLAS, and whether more than GEMV_ROWS rows do
    too (where BLAS may have more than one thread; see the module docstring)."""
    _state["enabled"], _state["gemm"] = enabled, gemm


def blas_linear_enabled() -> bool:
    return bool(_state["enabled"])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through numpy's BLAS for float32 CPU inputs where that is faster (above)."""
    if not _use_blas(x, weight):
        return F.linear(x, weight, bias)
    w, rows = weight.numpy(), x.numpy()
    if len(rows) <= GEMV_ROWS:
        products = np.empty((len(rows), w.shape[0]), dtype=np.float32)
        for i, row in enumerate(rows):
            np.matmul(w, row, out=products[i])  # GEMV over W's rows
        out = torch.from_numpy(products)
    else:
        out = torch.from_numpy(rows @ w.T)  # GEMM; W^T is a transposed view, no copy
    return out if bias is None else out + bias


def _use_blas(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        bool(_state["enabled"])
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() == 2
        and x.shape[0] > 0
        and (x.shape[0] <= GEMV_ROWS or bool(_state["gemm"]))
        and not (x.requires_grad or weight.requires_grad)
    )
