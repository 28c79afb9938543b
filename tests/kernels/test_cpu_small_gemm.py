"""The compiled small-batch CPU product (kernels/cpu/small_gemm.py): float32 sums equal to a
float64 reference within rounding for every tile shape and remainder, on one and two threads;
the products it takes; its build cache; and a clear fallback to BLAS where it cannot build."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radixserve.kernels.cpu import small_gemm
from radixserve.kernels.cpu.blas_linear import linear, set_blas_linear

pytestmark = pytest.mark.usefixtures("restore_cpu_state")


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    out = x.double() @ w.double().T
    return out if b is None else out + b.double()


# Rows cover every main tile (1-4 rows of x) and remainders of row blocks; out features cover
# every remainder of the 3-6 W rows a tile takes; in features with and without a K % 8 tail;
# over 128 rows a product runs as row blocks of 128 (129, 300).
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 9, 16, 31, 32, 129, 300])
@pytest.mark.parametrize(("out_features", "in_features"), [(1, 8), (13, 70), (96, 64), (50, 576)])
def test_products_equal_the_reference(
    kernel: small_gemm.SmallGemm, threads: int, rows: int, out_features: int, in_features: int
) -> None:
    kernel.set_threads(threads)
    gen = torch.Generator().manual_seed(rows * 1000 + out_features)
    w = torch.randn(out_features, in_features, generator=gen)
    b = torch.randn(out_features, generator=gen)
    x = torch.randn(rows, in_features, generator=gen)
    for bias in (None, b):
        out = kernel.linear(x, w, bias)
        assert out.shape == (rows, out_features) and out.is_contiguous()
        expected = reference(x, w, bias)
        bound = 1e-6 * in_features * (x.abs().max() * w.abs().max()).item() + 1e-6
        assert (out.double() - expected).abs().max().item() <= bound


@pytest.mark.parametrize("rows", [1, 4, 7, 40])
def test_two_threads_change_no_bit(kernel: small_gemm.SmallGemm, rows: int) -> None:
    """Each output is one tile's sum, whichever thread computes it: the two-thread product equals
    the one-thread product exactly, for W narrower than a tile per thread and wide ones."""
    gen = torch.Generator().manual_seed(rows)
    for out_features in (5, 17, 48, 1000):
        w = torch.randn(out_features, 96, generator=gen)
        b = torch.randn(out_features, generator=gen)
        x = torch.randn(rows, 96, generator=gen)
        kernel.set_threads(1)
        alone = kernel.linear(x, w, b)
        kernel.set_threads(2)
        for _ in range(3):
            assert torch.equal(kernel.linear(x, w, b), alone), out_features


def test_strided_rows_and_a_column_slice_of_x(kernel: small_gemm.SmallGemm) -> None:
    """x as the q part of a fused projection's output: rows one wide stride apart."""
    kernel.set_threads(2)
    wide = torch.randn(6, 100)
    x = wide[:, 10:74]  # row stride 100, 64 features
    w = torch.randn(40, 64)
    torch.testing.assert_close(kernel.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    transposed = torch.randn(64, 6).T  # elements not contiguous: copied first
    torch.testing.assert_close(
        kernel.linear(transposed, w), F.linear(transposed, w), rtol=1e-5, atol=1e-5
    )


def test_bad_shapes_and_layouts_are_refused(kernel: small_gemm.SmallGemm) -> None:
    w = torch.randn(8, 16)
    with pytest.raises(ValueError, match="do not match"):
        kernel.linear(torch.randn(2, 15), w)
    with pytest.raises(ValueError, match="row-major"):
        kernel.linear(torch.randn(2, 16), torch.randn(16, 8).T)
    with pytest.raises(ValueError, match="float32"):
        kernel.linear(torch.randn(2, 16, dtype=torch.float64), w.double())
    with pytest.raises(ValueError, match="bias"):
        kernel.linear(torch.randn(2, 16), w, torch.randn(7))
    assert kernel.linear(torch.randn(0, 16), w).shape == (0, 8)


def test_long_products_go_through_numpys_blas(kernel: small_gemm.SmallGemm) -> None:
    """Over BLAS_OVER_ROWS rows the kernel hands a float32 product to numpy's cblas_sgemm (the
    same bits as numpy's own x @ W^T), strided rows included; at the limit, and with BLAS
    turned off, its own tiles take it, in row blocks of 128."""
    gen = torch.Generator().manual_seed(11)
    w, b = torch.randn(96, 576, generator=gen), torch.randn(96, generator=gen)
    rows = small_gemm.BLAS_OVER_ROWS + 45
    x = torch.randn(rows, 1200, generator=gen)[:, :576]  # a row stride of 1200
    expected = torch.from_numpy(x.numpy() @ w.numpy().T) + b
    try:
        assert kernel.use_blas(small_gemm.BLAS_OVER_ROWS)
        assert torch.equal(kernel.linear(x, w, b), expected)
        at_limit = x[: small_gemm.BLAS_OVER_ROWS]
        tiles_at_limit = kernel.linear(at_limit, w, b)
        assert kernel.use_blas(0)
        assert torch.equal(tiles_at_limit, kernel.linear(at_limit, w, b))
        tiles = kernel.linear(x, w, b)
        assert torch.equal(tiles[:128], tiles_at_limit[:128])
        assert not torch.equal(tiles, expected)  # summed in another order
        torch.testing.assert_close(tiles, expected, rtol=1e-4, atol=1e-4)
    finally:
        kernel.use_blas(small_gemm.BLAS_OVER_ROWS)


def test_linear_takes_the_kernel_up_to_its_row_limit(kernel, monkeypatch) -> None:
    set_blas_linear(True)
    taken: list[int] = []
    original = kernel.linear

    def recording(x, weight, bias=None, blocks=None):
        taken.append(x.shape[0])
        return original(x, weight, bias, blocks)

    monkeypatch.setattr(kernel, "linear", recording)
    w = torch.randn(24, 32)
    for rows in (1, 3, small_gemm.ROWS_UP_TO, small_gemm.ROWS_UP_TO + 1, 300):
        x = torch.randn(rows, 32)
        torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    column_major_w = w.t().contiguous().t()  # BLAS's layout: not this kernel's
    linear(torch.randn(2, 32), column_major_w)
    assert taken == [1, 3, small_gemm.ROWS_UP_TO]


def test_the_build_is_cached_and_keyed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RADIXSERVE_CACHE_DIR", str(tmp_path))
    first = small_gemm._build()
    assert first.parent == tmp_path / "cpu_kernels" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert small_gemm._build() == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert list(first.parent.glob("*.partial")) == []
    monkeypatch.setattr(small_gemm, "FLAGS", (*small_gemm.FLAGS, "-DRADIXSERVE_TEST_FLAG=1"))
    assert small_gemm._build() != first  # other flags: another build


def test_without_a_compiler_products_fall_back_to_blas(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("RADIXSERVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "radixserve-no-such-compiler")
    monkeypatch.setattr(small_gemm, "_state", {"tried": False, "kernel": None, "threads": 1})
    set_blas_linear(True)
    with caplog.at_level(logging.WARNING, logger=small_gemm.__name__):
        assert small_gemm.small_gemm() is None
    assert "radixserve-no-such-compiler" in caplog.text and "BLAS" in caplog.text
    x, w = torch.randn(4, 32), torch.randn(24, 32)
    torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_without_the_arch_flag_it_builds_portable_code(tmp_path, monkeypatch) -> None:
    """A compiler that refuses -march=native gets a second try without it: generic vector code
    (no AVX register pinning), loaded and correct."""
    import ctypes

    monkeypatch.setenv("RADIXSERVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(small_gemm, "ARCH_FLAG", "-march=radixserve-no-such-cpu")
    portable = small_gemm.SmallGemm(ctypes.CDLL(str(small_gemm._build())), tmp_path)
    portable.set_threads(2)
    x, w = torch.randn(5, 70), torch.randn(13, 70)
    torch.testing.assert_close(portable.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_a_broken_compiler_is_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RADIXSERVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # on PATH, exits 1
    with pytest.raises(RuntimeError, match="compiling failed"):
        small_gemm._build()
    assert list((tmp_path / "cpu_kernels").glob("*")) == []


def test_turned_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(small_gemm.DISABLE_ENV, "0")
    monkeypatch.setattr(small_gemm, "_state", {"tried": False, "kernel": None, "threads": 1})
    assert small_gemm.small_gemm() is None


def _product_in_child(queue) -> None:
    # No torch compute here: torch's OpenMP pool, used by the parent's earlier tests, is not
    # fork-safe (that is torch's, not this kernel's); numpy makes the inputs and the reference.
    kernel = small_gemm.small_gemm()
    assert kernel is not None
    kernel.set_threads(2)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((8, 64), np.float32), rng.standard_normal((30, 64), np.float32)
    out = kernel.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    queue.put(float(np.abs(out - x @ w.T).max()))


def test_a_forked_child_starts_its_own_workers(kernel: small_gemm.SmallGemm) -> None:
    """The parent's workers do not exist in a forked child: without the fork handler the
    child's first two-thread product would wait for them forever."""
    kernel.set_threads(2)
    kernel.linear(torch.randn(8, 64), torch.randn(30, 64))  # the parent's worker is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_product_in_child, args=(queue,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child's product hung")
    assert child.exitcode == 0 and queue.get(timeout=10) < 1e-4
