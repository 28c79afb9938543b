"""The torch backend's pure-decode path: every row of the batch one decode, in order, so the
query is used in place (no gather) and the group's output is returned as is (no scatter)."""

from __future__ import annotations

import pytest
import torch

from radixserve.kernels.attention import create_attention_backend
from radixserve.kernels.attention.base import AttentionShape
from radixserve.kernels.attention.torch_backend import TorchAttentionBackend
from tests.kernels.test_attention_backends import (
    DECODES,
    DECODES_FIRST,
    DIM,
    HEADS,
    KV_HEADS,
    MIXED,
    dense_reference,
    random_batch,
)


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize(
    "shapes, in_order", [(DECODES, True), (DECODES_FIRST, False), (MIXED, False)]
)
@pytest.mark.parametrize("strided_q", [False, True])
def test_decode_rows_in_place_match_the_dense_reference(
    page_size: int, shapes: list[tuple[int, int]], in_order: bool, strided_q: bool
) -> None:
    cpu = torch.device("cpu")
    batch, slices, q, k_cache, v_cache = random_batch(page_size, 3, cpu, torch.float32, shapes)
    if strided_q:  # q as the rotary leaves it: a view into wider rows ([q | k] per token)
        wide = torch.zeros(q.shape[0], HEADS + KV_HEADS, DIM)
        wide[:, :HEADS] = q
        q = wide[:, :HEADS]
    backend = create_attention_backend(
        "torch", AttentionShape(HEADS, KV_HEADS, DIM, page_size, torch.float32, cpu)
    )
    assert isinstance(backend, TorchAttentionBackend)
    backend.plan(batch.layout)
    assert [g.rows_in_order for g in backend._groups][:1] == [in_order]
    scale = DIM**-0.5
    out = backend.forward(q, k_cache, v_cache, scale)
    ref = dense_reference(slices, q, k_cache, v_cache, page_size, scale)
    assert out.shape == ref.shape
    assert (out.double() - ref).abs().max().item() < 1e-5


# Prefill chunks of whole sequences (no cached prefix), with decodes beside them.
FRESH_PROMPTS = [(40, 1), (0, 17), (0, 64), (0, 1), (0, 9)]


@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("shapes", [FRESH_PROMPTS, MIXED])
def test_prefill_chunks_run_causal_sdpa_without_a_mask_where_they_can(
    page_size: int, shapes: list[tuple[int, int]]
) -> None:
    cpu = torch.device("cpu")
    batch, slices, q, k_cache, v_cache = random_batch(page_size, 5, cpu, torch.float32, shapes)
    backend = create_attention_backend(
        "torch", AttentionShape(HEADS, KV_HEADS, DIM, page_size, torch.float32, cpu)
    )
    assert isinstance(backend, TorchAttentionBackend)
    backend.plan(batch.layout)
    # On the CPU each prefill chunk is a group of its own, in batch order; a chunk needs a mask
    # only after a prefix at least as long as itself (MIXED's (33, 9)): a fresh prompt, or a
    # chunk longer than its prefix (placeholder queries first), runs SDPA's causal flag.
    chunks = [(p, e) for p, e in shapes if e > 1]
    groups = backend._groups[-len(chunks) :]
    assert [g.batch for g in groups] == [1] * len(chunks)
    assert [g.mask is None for g in groups] == [p == 0 or p < e for p, e in chunks]
    assert [g.max_q for g in groups] == [p + e if 0 < p < e else e for p, e in chunks]
    scale = DIM**-0.5
    out = backend.forward(q, k_cache, v_cache, scale)
    ref = dense_reference(slices, q, k_cache, v_cache, page_size, scale)
    assert (out.double() - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize(("products", "expected"), [(None, 1), (1, 1), (2, 2)])
def test_a_large_sdpa_widens_to_the_products_threads_and_restores(
    monkeypatch: pytest.MonkeyPatch, products: int | None, expected: int
) -> None:
    from radixserve.kernels.attention import torch_backend

    monkeypatch.setattr(torch_backend, "blas_threads_in_force", lambda: products)
    seen: list[int] = []
    sdpa = torch_backend.F.scaled_dot_product_attention

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch_backend.F, "scaled_dot_product_attention", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu = torch.device("cpu")
        # One fresh 80-token prompt: 6,400 padded pairs, over WIDE_SDPA_PAIRS; a decode row: not.
        batch, slices, q, k_cache, v_cache = random_batch(
            1, 7, cpu, torch.float32, [(30, 1), (0, 80)]
        )
        backend = create_attention_backend(
            "torch", AttentionShape(HEADS, KV_HEADS, DIM, 1, torch.float32, cpu)
        )
        backend.plan(batch.layout)
        out = backend.forward(q, k_cache, v_cache, DIM**-0.5)
        assert seen == [1, expected]  # the decode group first, then the prompt
        assert torch.get_num_threads() == 1  # restored
        ref = dense_reference(slices, q, k_cache, v_cache, 1, DIM**-0.5)
        assert (out.double() - ref).abs().max().item() < 1e-5
    finally:
        torch.set_num_threads(before)
