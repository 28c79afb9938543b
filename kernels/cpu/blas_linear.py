"""y = x W^T (+ b) on the CPU through numpy's BLAS (OpenBLAS in numpy's Linux wheels), which is
faster than torch's own there.

A decode step of a small model on the CPU is mostly matrix-vector products over weights that do
not fit in cache, so it runs at the memory's speed. Measured on the 2-core development machine
(AMD EPYC, AVX2; the 121 products of one SmolLM2-135M step, float32, weights not cache-resident;
docs/cpu_profile.md):

    rows  threads   torch (F.linear)   OpenBLAS, W row-major   OpenBLAS, W column-major
    1     1         38.1 ms            32.7 ms                 26.8 ms
    1     2         38.0 ms            21.9 ms                 22.0 ms
    4     1         74.0 ms            78.6 ms                 56.0 ms
    16    2         73.5 ms            56.0 ms                 53.1 ms
    256   2         866 ms             -                       415 ms

torch does not spread a GEMV over threads; OpenBLAS does, and reads W^T best when it is
contiguous. Products of up to small_gemm.ROWS_UP_TO rows go to our compiled kernel where it
builds (small_gemm.py: faster at 2-32 rows, as fast or faster up to 256), over the row-major
weights it reads (it hands those of over small_gemm.BLAS_OVER_ROWS rows to this same OpenBLAS,
as the C forward step's own products), and OpenBLAS takes the larger ones (long prefill chunks)
over those. Where
the kernel does not build, the model runner stores the float32 weights of the linear layers and
the LM head column-major on the CPU (`column_major_weights`: the same [out, in] tensors,
transposed storage) and every product comes here. OpenBLAS's GEMM packs the whole weight matrix
on every call, which costs most at two or three rows: up to three rows go through one GEMV each
(two rows: 42.8 ms on one thread against 61.9 as a GEMM), more rows through its GEMM.

OpenBLAS's GEMM over these shapes is fastest at a multiple of eight rows: a step's 121 products
took 37-40 ms at 8 rows against 44-46 at 4 and 53-64 at 5-7, and 48-52 at 16 against 58-80 at
10-14 (two threads, the same run, every row count from 1 to 32 timed; 9 rows is the one tie),
and 99 ms at 48 rows against 121 at 45, no gain from 170 rows on. So a GEMM of up to
PAD_ROWS_UP_TO rows runs over the rows padded with zeros to the next multiple of eight, and the
padding rows' outputs are dropped (engine, batches of 6 and 12 greedy: 1.33x and 1.13x tok/s, the
same text).

Torch and OpenBLAS compute the same float32 sums in different orders: results agree to float32
rounding, not bit for bit; which one a product takes depends on its row count only, never on the
machine's load.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import small_gemm
from .quantized import QuantizedWeight

GEMV_ROWS = 3  # up to this many rows: one GEMV each (above)
ROW_MULTIPLE = 8  # OpenBLAS's GEMM is fastest at a multiple of this many rows (above)
# Padded up to this many rows: 45 -> 48 rows took 121 -> 99 ms, 99 -> 104 200 -> 187, and
# 170 -> 176 gained nothing (above).
PAD_ROWS_UP_TO = 128

_state = {"enabled": True}


def set_blas_linear(enabled: bool) -> None:
    """Whether CPU products may go through numpy's BLAS (set once per process, at start)."""
    _state["enabled"] = enabled


def blas_linear_enabled() -> bool:
    return bool(_state["enabled"])


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    blocks: QuantizedWeight | None = None,
) -> torch.Tensor:
    """F.linear, through our small-batch kernel (small_gemm.py) or numpy's BLAS for float32 CPU
    inputs where that is faster (above). `blocks`, W's GGUF blocks (equal to it bit for bit,
    quantized.py), are what the kernel reads for products of few rows (native/small_gemm.h)."""
    if not _use_blas(x, weight):
        return F.linear(x, weight, bias)
    if x.shape[0] <= small_gemm.ROWS_UP_TO and weight.is_contiguous():
        kernel = small_gemm.small_gemm()
        if kernel is not None:
            return kernel.linear(x, weight, bias, blocks)
    w, rows = weight.numpy(), x.numpy()
    if len(rows) <= GEMV_ROWS:
        products = np.empty((len(rows), w.shape[0]), dtype=np.float32)
        for i, row in enumerate(rows):
            np.matmul(w, row, out=products[i])  # GEMV over W's rows
        out = torch.from_numpy(products)
    else:
        out = torch.from_numpy(_gemm(rows, w.T))  # W^T is a transposed view, no copy
    return out if bias is None else out + bias


def _gemm(rows: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """rows @ w_t, over the rows padded with zeros to a multiple of ROW_MULTIPLE (above)."""
    count = len(rows)
    padded = -(-count // ROW_MULTIPLE) * ROW_MULTIPLE
    if padded == count or count > PAD_ROWS_UP_TO:
        return rows @ w_t
    buffer = np.zeros((padded, rows.shape[1]), dtype=rows.dtype)
    buffer[:count] = rows
    return (buffer @ w_t)[:count]  # the leading rows of a C-contiguous array: contiguous


def column_major(weight: torch.Tensor) -> None:
    """Re-lays a 2-D float32 weight out column-major in place: the same [out, in] tensor over
    transposed storage, so that W^T is contiguous for BLAS (see the module docstring)."""
    weight.data = weight.data.t().contiguous().t()


def _use_blas(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        bool(_state["enabled"])
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() == 2
        and x.shape[0] > 0
        and not (x.requires_grad or weight.requires_grad)
    )
