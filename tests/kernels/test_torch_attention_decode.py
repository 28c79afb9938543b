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
