"""The C step's prefill attention (native/lane_attention.c) called on its own: up to LANES
consecutive query rows of one sequence against one KV head of a paged cache, each row over its
own number of keys. The C step calls the kernel directly; this checked entry serves its tests
and anyone timing it."""

from __future__ import annotations

import ctypes

import torch

from .small_gemm import SmallGemm, small_gemm

LANES = 16  # native/lane_attention.h: RS_LANES
MAX_HEAD_DIM = 256  # RS_LANE_MAX_HEAD_DIM

_P = ctypes.c_void_p
# rs_lane_attention's parameters (native/lane_attention.h), for callers that check their own.
ARGTYPES = [
    _P,  # q
    ctypes.c_long,  # q's row stride
    ctypes.c_int,  # rows
    _P,  # each row's key count
    ctypes.c_long,  # head dim
    ctypes.c_float,  # scale
    _P,  # k: the head's first key
    _P,  # v
    ctypes.c_long,  # a slot's stride in the caches
    _P,  # slots
    _P,  # out
    ctypes.c_long,  # out's row stride
]


def lane_attention(
    q: torch.Tensor,
    lengths: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_head: int,
    slots: torch.Tensor,
    scale: float,
    kernel: SmallGemm | None = None,
) -> torch.Tensor:
    """q [rows, D] (rows <= LANES) over KV head `kv_head` of k_cache/v_cache [slots, Hkv, D]:
    row i attends to the keys at slots[:lengths[i]] with softmax(scale * q k). Returns [rows,
    D]. Every index is checked, since C would not. `kernel`: another build of the library (the
    loaded one by default)."""
    kernel = kernel or small_gemm()
    if kernel is None:
        raise RuntimeError("the compiled CPU kernels are unavailable")
    rows, dim = q.shape
    if not 0 < rows <= LANES or dim % 2 or dim > MAX_HEAD_DIM:
        raise ValueError(f"q shape {tuple(q.shape)}: 1..{LANES} rows of an even D <= 256")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous float32 on the CPU")
    if k_cache.shape != v_cache.shape or k_cache.dim() != 3 or k_cache.shape[2] != dim:
        raise ValueError(f"cache shapes {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    if not 0 <= kv_head < k_cache.shape[1]:
        raise ValueError(f"kv_head {kv_head} of {k_cache.shape[1]}")
    for name, t in (("lengths", lengths), ("slots", slots)):
        if t.dtype != torch.int64 or t.dim() != 1 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous 1-D int64 tensor")
    if lengths.shape[0] != rows or int(lengths.min()) < 1 or int(lengths.max()) > len(slots):
        raise ValueError(f"lengths: {rows} counts in 1..{len(slots)} expected")
    used = slots[: int(lengths.max())]
    if int(used.min()) < 0 or int(used.max()) >= k_cache.shape[0]:
        raise ValueError(f"slots must lie in 0..{k_cache.shape[0] - 1}")
    run = kernel.lib.rs_lane_attention
    run.argtypes = ARGTYPES
    run.restype = None
    out = torch.empty(rows, dim)
    head_offset = kv_head * dim * k_cache.element_size()
    run(
        q.data_ptr(),
        dim,
        rows,
        lengths.data_ptr(),
        dim,
        scale,
        k_cache.data_ptr() + head_offset,
        v_cache.data_ptr() + head_offset,
        k_cache.shape[1] * dim,
        slots.data_ptr(),
        out.data_ptr(),
        dim,
    )
    return out
