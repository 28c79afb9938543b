"""Fixtures of the compiled CPU kernels' tests (test_cpu_small_gemm.py, test_cpu_quantized.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from radixserve.kernels.cpu import blas_linear, small_gemm


@pytest.fixture(scope="module")
def kernel() -> small_gemm.SmallGemm:
    built = small_gemm.small_gemm()
    assert built is not None, "the C compiler is on this machine: the kernel must build"
    return built


@pytest.fixture
def restore_cpu_state() -> Iterator[None]:
    """Puts back the BLAS switch and the kernels' load state and thread count a test changed."""
    saved_blas, saved_gemm = dict(blas_linear._state), dict(small_gemm._state)
    yield
    blas_linear._state.update(saved_blas)
    small_gemm._state.update(saved_gemm)
    small_gemm.set_small_gemm_threads(int(saved_gemm["threads"]))  # type: ignore[arg-type]
