"""The fused Triton kernels against the layers' torch code (the reference), on the GPU.

Each op runs twice on the same inputs, fused kernels switched on and off; bf16 results may differ
by rounding order only, float32 results by float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radixserve.kernels import fused
from radixserve.runtime.model_executor.model_config import RopeConfig
from radixserve.runtime.model_executor.models.layers.activation import silu_and_mul
from radixserve.runtime.model_executor.models.layers.linear import (
    ColumnParallelLinear,
    RowParallelLinear,
)
from radixserve.runtime.model_executor.models.layers.norm import RMSNorm
from radixserve.runtime.model_executor.models.layers.rotary import RotaryEmbedding

pytestmark = pytest.mark.gpu
TOLERANCE = {torch.bfloat16: 2e-2, torch.float32: 1e-5}


def both(fn):
    """fn() with the fused kernels on, then off."""
    try:
        fused.set_enabled(True)
        with_kernels = fn()
        fused.set_enabled(False)
        reference = fn()
    finally:
        fused.set_enabled(True)
    return with_kernels, reference


def assert_close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = max(b.abs().max().item(), 1.0)
    assert (a.float() - b.float()).abs().max().item() <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("size", [576, 896, 4096])  # SmolLM2, Qwen2-0.5B, Llama-8B widths
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_rms_norm_with_and_without_residual(dtype: torch.dtype, size: int, rows: int) -> None:
    torch.manual_seed(size + rows)
    norm = RMSNorm(size, 1e-5).cuda().to(dtype)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(rows, size, device="cuda", dtype=dtype) * 3
    residual = torch.randn(rows, size, device="cuda", dtype=dtype)
    plain, plain_ref = both(lambda: norm(x))
    assert_close(plain, plain_ref, dtype)
    (normed, summed), (normed_ref, summed_ref) = both(
        lambda: norm.forward_with_residual(x, residual)
    )
    assert_close(normed, normed_ref, dtype)
    assert torch.equal(summed, summed_ref)  # the residual sum rounds exactly as torch does


def test_rms_norm_of_strided_head_views() -> None:
    """Qwen3's q/k norm runs on [T, H, D] views of the fused QKV output."""
    qkv = torch.randn(5, 3 * 8 * 128, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, : 8 * 128].view(5, 8, 128)
    norm = RMSNorm(128, 1e-6).cuda().to(torch.bfloat16)
    out, ref = both(lambda: norm(q))
    assert_close(out, ref, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 2 * 1536), (9, 2 * 4864), (130, 2 * 14336)])
def test_silu_and_mul(dtype: torch.dtype, shape: tuple[int, int]) -> None:
    torch.manual_seed(shape[0])
    x = torch.randn(*shape, device="cuda", dtype=dtype) * 4
    out, ref = both(lambda: silu_and_mul(x))
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_rotary_on_qkv_views_at_ragged_positions(dtype: torch.dtype, head_dim: int) -> None:
    rope = RopeConfig(
        theta=500000.0,
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position=8192,
    )
    rotary = RotaryEmbedding(head_dim, 20000, rope).cuda()
    heads, kv_heads, tokens = 8, 2, 37
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device="cuda", dtype=dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    positions = torch.randint(0, 20000, (tokens,), device="cuda")
    (q_out, k_out), (q_ref, k_ref) = both(lambda: rotary(positions, q, k))
    assert_close(q_out, q_ref, dtype)
    assert_close(k_out, k_ref, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tokens", [1, 37])
def test_rotary_into_the_paged_cache_matches_rotary_then_store(
    dtype: torch.dtype, tokens: int
) -> None:
    """One launch rotates q and k and writes k and v at their slots; the reference rotates
    (torch code) and stores with index assignment. Slots outside `slots` stay untouched."""
    head_dim, heads, kv_heads, page_size, pages = 128, 32, 8, 16, 12
    rope = RopeConfig(theta=500000.0)
    rotary = RotaryEmbedding(head_dim, 4096, rope).cuda()
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device="cuda", dtype=dtype)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q, k, v = (x.view(tokens, -1, head_dim) for x in (q, k, v))
    positions = torch.randint(0, 4096, (tokens,), device="cuda")
    slots = torch.randperm(pages * page_size, device="cuda")[:tokens]
    shape = (pages, page_size, kv_heads, head_dim)
    k_cache, v_cache = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(2))
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    q_out = rotary.rotate_into_cache(positions, q, k, v, k_cache, v_cache, slots)
    assert q_out is not None
    fused.set_enabled(False)
    try:
        q_rot, k_rot = rotary(positions, q, k)
    finally:
        fused.set_enabled(True)
    k_ref.view(-1, kv_heads, head_dim)[slots] = k_rot
    v_ref.view(-1, kv_heads, head_dim)[slots] = v
    assert q_out.is_contiguous()
    assert_close(q_out, q_rot, dtype)
    assert_close(k_cache, k_ref, dtype)
    assert torch.equal(v_cache, v_ref)
    # A cache in another dtype is left to the separate rotate-and-store path.
    other = torch.float16 if dtype != torch.float16 else torch.float32
    assert (
        rotary.rotate_into_cache(positions, q, k, v, k_cache.to(other), v_cache.to(other), slots)
        is None
    )


def test_switched_off_or_on_the_cpu_the_torch_code_runs() -> None:
    x = torch.randn(2, 8)
    assert not fused.available(x)
    fused.set_enabled(False)
    try:
        assert not fused.available(x.cuda())
    finally:
        fused.set_enabled(True)
    assert fused.available(x.cuda()) == (fused._HAS_TRITON)


def _linear_layers(k: int, n: int, bias: bool) -> tuple[ColumnParallelLinear, RowParallelLinear]:
    column = ColumnParallelLinear(k, n, bias).cuda().to(torch.bfloat16)
    row = RowParallelLinear(k, n, bias).cuda().to(torch.bfloat16)
    for layer in (column, row):
        layer.weight.data.normal_(0, 0.05)
        if layer.bias is not None:
            layer.bias.data.normal_()
    return column, row


@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("shape", [(576, 1536), (4096, 6144), (14336, 4096), (1000, 77)])
@pytest.mark.parametrize("bias", [False, True])
def test_one_row_products_match_f_linear(rows: int, shape: tuple[int, int], bias: bool) -> None:
    """One row takes the gemv kernel (odd sizes masked), more rows F.linear."""
    torch.manual_seed(rows)
    k, n = shape
    column, row = _linear_layers(k, n, bias)
    x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
    assert fused.gemv_applies(x, column.weight) == (rows == 1)
    for layer in (column, row):
        out, ref = both(lambda layer=layer: layer(x))
        assert_close(out, ref, torch.bfloat16)


@pytest.mark.parametrize("config", [(1, 1024, 1), (2, 2048, 2), (8, 4096, 8)])
def test_gemv_block_configurations(config: tuple[int, int, int]) -> None:
    """Every block shape the benchmark sweeps computes the same product (K not a multiple of
    the block, N not a multiple of the rows per program)."""
    from radixserve.kernels.fused import matvec

    torch.manual_seed(0)
    x = torch.randn(1, 5000, device="cuda", dtype=torch.float16)
    w = torch.randn(1001, 5000, device="cuda", dtype=torch.float16) * 0.05
    assert_close(matvec.gemv(x, w, config=config), F.linear(x, w), torch.bfloat16)


def test_gemv_rejects_what_it_cannot_take() -> None:
    from radixserve.kernels.fused import matvec

    w = torch.randn(64, 32, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="one row"):
        matvec.gemv(torch.randn(2, 32, device="cuda", dtype=torch.bfloat16), w)
    with pytest.raises(ValueError, match="one row"):
        matvec.gemv(torch.randn(1, 33, device="cuda", dtype=torch.bfloat16), w)
    strided = torch.randn(1, 64, device="cuda", dtype=torch.bfloat16)[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        matvec.gemv(strided, w)
    assert not fused.gemv_applies(strided, w)
    assert not fused.gemv_applies(torch.randn(1, 32, device="cuda"), w.float())  # float32


@pytest.mark.parametrize(
    "heads", [(32, 8, 128, False), (14, 2, 64, True)]
)  # Llama-8B; Qwen2-0.5B (qkv bias)
def test_qkv_projection_rotary_and_store_in_one_launch(heads: tuple[int, int, int, bool]) -> None:
    """The batch-1 path (F.linear's product, rotated, k and v stored at the slot) against the
    three steps apart: the one-row product, then rotary_and_store's kernel."""
    num_heads, num_kv_heads, head_dim, bias = heads
    torch.manual_seed(num_heads)
    dtype, hidden, pages, page_size = torch.bfloat16, 896, 6, 16
    proj, _ = _linear_layers(hidden, (num_heads + 2 * num_kv_heads) * head_dim, bias)
    rotary = RotaryEmbedding(head_dim, 4096, RopeConfig(theta=1000000.0)).cuda()
    x = torch.randn(1, hidden, device="cuda", dtype=dtype)
    positions = torch.tensor([1234], device="cuda")
    slots = torch.tensor([37], device="cuda")
    shape = (pages, page_size, num_kv_heads, head_dim)
    k_cache, v_cache = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(2))
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    q = fused.qkv_rotary_store(
        x, proj.weight, proj.bias, positions, rotary.cos_table, rotary.sin_table,
        k_cache, v_cache, slots, num_heads, num_kv_heads,
    )  # fmt: skip
    qkv = proj(x)  # the one-row kernel
    q_part, k_part, v_part = qkv.split(
        [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1
    )
    q_ref = rotary.rotate_into_cache(
        positions, q_part.view(1, num_heads, head_dim), k_part.view(1, num_kv_heads, head_dim),
        v_part.view(1, num_kv_heads, head_dim), k_ref, v_ref, slots,
    )  # fmt: skip
    assert q_ref is not None and q.shape == q_ref.shape
    assert_close(q, q_ref, dtype)
    assert_close(k_cache, k_ref, dtype)
    assert_close(v_cache, v_ref, dtype)
    untouched = torch.ones(pages * page_size, dtype=torch.bool, device="cuda")
    untouched[37] = False
    for cache, before in ((k_cache, k_ref), (v_cache, v_ref)):
        rows, rows_before = (
            cache.view(-1, num_kv_heads, head_dim),
            before.view(-1, num_kv_heads, head_dim),
        )
        assert torch.equal(rows[untouched], rows_before[untouched])
