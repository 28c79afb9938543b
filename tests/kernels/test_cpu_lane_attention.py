"""The C step's prefill attention, queries in vector lanes (kernels/cpu/lane_attention.py):
each row's softmax over its own keys of a paged cache equals a float64 reference within float32
rounding, for every row count of a call, rows ending inside a key block at different places, a
row alone, head sizes of 64 and 6 (no multiple of a vector), and scores far apart (the vector
exp's underflow to exactly zero)."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest
import torch

from radixserve.kernels.cpu import small_gemm
from radixserve.kernels.cpu.lane_attention import LANES, lane_attention
from radixserve.kernels.cpu.small_gemm import SmallGemm

KV_HEADS = 3


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.fixture(scope="module", params=["native", "avx2"])
def build(request, kernel: SmallGemm, tmp_path_factory) -> SmallGemm:
    """The loaded library, and one built for AVX2 alone where this CPU has AVX-512 (so that the
    8-float path is checked here too)."""
    if request.param == "native":
        return kernel
    flags = cpu_flags() if platform.machine() == "x86_64" else set()
    if "avx512f" not in flags or "avx2" not in flags:
        pytest.skip("the native build is the AVX2 one (no AVX-512 here)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RADIXSERVE_CACHE_DIR", str(tmp_path_factory.mktemp("avx2")))
        patch.setattr(small_gemm, "FLAGS", (*small_gemm.FLAGS, "-mno-avx512f"))
        path = small_gemm._build()
    return SmallGemm(ctypes.CDLL(str(path)), path)


def reference(q, lengths, k_cache, v_cache, head, slots, scale) -> torch.Tensor:
    rows = []
    for row, n in zip(q.double(), lengths.tolist(), strict=True):
        keys = k_cache[slots[:n], head].double()
        values = v_cache[slots[:n], head].double()
        rows.append(torch.softmax(keys @ row * scale, 0) @ values)
    return torch.stack(rows).float()


def paged(total: int, dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    k_cache = torch.randn(total + 7, KV_HEADS, dim, generator=gen)
    v_cache = torch.randn(total + 7, KV_HEADS, dim, generator=gen)
    slots = torch.randperm(total + 7, generator=gen)[:total].contiguous()  # pages out of order
    return gen, k_cache, v_cache, slots


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 15, LANES])
@pytest.mark.parametrize("dim", [64, 6])
def test_causal_rows_equal_the_reference(build: SmallGemm, rows: int, dim: int) -> None:
    """A chunk of `rows` tokens after a 37-token prefix: row i sees 38 + i keys."""
    gen, k_cache, v_cache, slots = paged(37 + rows, dim, seed=rows * 10 + dim)
    q = torch.randn(rows, dim, generator=gen)
    lengths = torch.arange(38, 38 + rows)
    for head in range(KV_HEADS):
        out = lane_attention(q, lengths, k_cache, v_cache, head, slots, dim**-0.5, kernel=build)
        expected = reference(q, lengths, k_cache, v_cache, head, slots, dim**-0.5)
        torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-6)


def test_rows_of_any_lengths_in_one_call(build: SmallGemm) -> None:
    """Lengths out of order, from one key up, several ending inside the same key block."""
    gen, k_cache, v_cache, slots = paged(300, 64, seed=3)
    lengths = torch.tensor([1, 300, 5, 4, 6, 129, 2, 3, 64, 65, 66, 7, 299, 128, 11, 12])
    q = torch.randn(len(lengths), 64, generator=gen)
    out = lane_attention(q, lengths, k_cache, v_cache, 1, slots, 0.125, kernel=build)
    expected = reference(q, lengths, k_cache, v_cache, 1, slots, 0.125)
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(out[0], v_cache[slots[0], 1])  # one key: its value exactly


def test_scores_far_apart_stay_finite(build: SmallGemm) -> None:
    """Scores hundreds apart: the smaller ones' exp underflows to zero (never NaN or inf) and
    the largest key alone decides the output."""
    gen, k_cache, v_cache, slots = paged(40, 64, seed=5)
    q = torch.randn(4, 64, generator=gen)
    k_cache[slots[17], 0] = q[0] * 40.0  # row 0's score for key 17 far above the rest
    lengths = torch.tensor([40, 40, 18, 17])
    out = lane_attention(q, lengths, k_cache, v_cache, 0, slots, 1.0, kernel=build)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], v_cache[slots[17], 0])
    expected = reference(q, lengths, k_cache, v_cache, 0, slots, 1.0)
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-6)


def test_bad_arguments_are_refused(kernel: SmallGemm) -> None:
    _, k_cache, v_cache, slots = paged(20, 64, seed=7)
    q = torch.randn(2, 64)
    good = dict(
        q=q,
        lengths=torch.tensor([3, 4]),
        k_cache=k_cache,
        v_cache=v_cache,
        kv_head=0,
        slots=slots,
        scale=0.125,
    )
    bad = [
        ("q", torch.randn(LANES + 1, 64), "rows"),
        ("q", torch.randn(2, 7), "rows"),
        ("lengths", torch.tensor([3, 21]), "counts"),
        ("lengths", torch.tensor([0, 4]), "counts"),
        ("kv_head", KV_HEADS, "kv_head"),
        ("slots", torch.full((20,), 10**6), "slots"),
        ("lengths", torch.tensor([3, 4], dtype=torch.int32), "int64"),
    ]
    for name, value, message in bad:
        with pytest.raises(ValueError, match=message):
            lane_attention(**{**good, name: value})
