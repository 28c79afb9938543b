"""Attention backends against a dense float64 reference on random paged batches.

The torch backend runs everywhere; the FlashInfer backend runs where CUDA and flashinfer exist
(marked `gpu`) and must agree with the torch backend on the same layout.
"""

from __future__ import annotations

import random

import pytest
import torch

from radixserve.kernels.attention import create_attention_backend
from radixserve.kernels.attention.base import AttentionShape
from radixserve.kernels.attention.flashinfer_backend import FlashInferAttentionBackend
from radixserve.runtime.model_executor.forward_batch import ForwardBatch
from radixserve.runtime.scheduler.step import RequestSlice

HEADS, KV_HEADS, DIM = 8, 2, 128  # DIM as in Llama 3: the kernels the benchmark uses too


MIXED = [(0, 17), (40, 1), (33, 9), (0, 1), (100, 1), (5, 64)]  # (prefix_len, extend_len)
DECODES = [(40, 1), (0, 1), (100, 1), (7, 1)]
# As the scheduler orders a step: decodes first, then chunks (FlashInfer splits the batch there).
DECODES_FIRST = [(40, 1), (0, 1), (100, 1), (0, 17), (33, 9), (5, 64)]
SHAPES = {"mixed": MIXED, "decode_only": DECODES, "decodes_first": DECODES_FIRST}


def random_batch(page_size: int, seed: int, device: torch.device, dtype: torch.dtype, shapes=MIXED):
    """A batch of (prefix, extend) requests over shuffled pages with random q and caches."""
    rng = random.Random(seed)
    num_pages = 512
    free = list(range(num_pages))
    rng.shuffle(free)
    slices, prefixes, extends = [], [], []
    for prefix, extend in shapes:
        seq = prefix + extend
        pages = [free.pop() for _ in range(-(-seq // page_size))]
        slices.append(RequestSlice([0] * extend, prefix, pages))
        prefixes.append(prefix)
        extends.append(extend)
    batch = ForwardBatch.build(slices, page_size, device)
    gen = torch.Generator().manual_seed(seed)
    shape = (num_pages + 1, page_size, KV_HEADS, DIM)
    k_cache = torch.randn(shape, generator=gen).to(device, dtype)
    v_cache = torch.randn(shape, generator=gen).to(device, dtype)
    q = torch.randn(batch.num_tokens, HEADS, DIM, generator=gen).to(device, dtype)
    return batch, slices, q, k_cache, v_cache


def dense_reference(slices, q, k_cache, v_cache, page_size: int, scale: float) -> torch.Tensor:
    out = []
    row = 0
    for s in slices:
        slots = [s.page_table[p // page_size] * page_size + p % page_size for p in range(s.seq_len)]
        k = (
            k_cache.reshape(-1, KV_HEADS, DIM)[slots]
            .double()
            .repeat_interleave(HEADS // KV_HEADS, 1)
        )
        v = (
            v_cache.reshape(-1, KV_HEADS, DIM)[slots]
            .double()
            .repeat_interleave(HEADS // KV_HEADS, 1)
        )
        qs = q[row : row + s.extend_len].double()
        scores = torch.einsum("qhd,khd->hqk", qs, k) * scale
        pos_q = torch.arange(s.prefix_len, s.seq_len)[:, None]
        mask = torch.arange(s.seq_len)[None, :] <= pos_q
        scores = scores.masked_fill(~mask.to(scores.device), float("-inf"))
        out.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), v))
        row += s.extend_len
    return torch.cat(out).reshape(row, HEADS * DIM)


def run_backend(name: str, page_size: int, device: torch.device, dtype: torch.dtype, seed: int):
    batch, slices, q, k_cache, v_cache = random_batch(page_size, seed, device, dtype)
    backend = create_attention_backend(
        name, AttentionShape(HEADS, KV_HEADS, DIM, page_size, dtype, device)
    )
    backend.plan(batch.layout)
    scale = DIM**-0.5
    out = backend.forward(q, k_cache, v_cache, scale)
    return out, dense_reference(slices, q, k_cache, v_cache, page_size, scale)


@pytest.mark.parametrize("page_size", [1, 16])
def test_torch_backend_matches_dense_reference(page_size: int) -> None:
    out, ref = run_backend("torch", page_size, torch.device("cpu"), torch.float32, seed=page_size)
    assert (out.double() - ref).abs().max().item() < 1e-5


def test_unknown_backend_is_a_clear_error() -> None:
    shape = AttentionShape(HEADS, KV_HEADS, DIM, 16, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        create_attention_backend("nope", shape)


@pytest.mark.gpu
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_flashinfer_matches_reference(page_size: int, kind: str) -> None:
    """Each path: the decode kernel (decodes only), the prefill kernel (mixed, a chunk first),
    and both split at the first chunk (decodes first)."""
    pytest.importorskip("flashinfer")
    device = torch.device("cuda")
    batch, slices, q, k_cache, v_cache = random_batch(
        page_size, 3, device, torch.bfloat16, SHAPES[kind]
    )
    shape = AttentionShape(HEADS, KV_HEADS, DIM, page_size, torch.bfloat16, device)
    outs = {}
    for name in ("flashinfer", "torch"):
        backend = create_attention_backend(name, shape)
        backend.plan(batch.layout)
        outs[name] = backend.forward(q, k_cache, v_cache, DIM**-0.5).float()
        if isinstance(backend, FlashInferAttentionBackend):  # split where decodes lead, only
            assert backend._decode_rows == (3 if kind == "decodes_first" else 0)
    ref = dense_reference(slices, q, k_cache, v_cache, page_size, DIM**-0.5).float()
    assert (outs["flashinfer"] - ref).abs().max().item() < 2e-2
    assert (outs["torch"] - ref).abs().max().item() < 2e-2


def test_the_torch_backend_does_not_offer_cuda_graphs() -> None:
    shape = AttentionShape(HEADS, KV_HEADS, DIM, 16, torch.float32, torch.device("cpu"))
    backend = create_attention_backend("torch", shape)
    assert not backend.supports_cuda_graph
    with pytest.raises(NotImplementedError, match="does not support CUDA graphs"):
        backend.init_cuda_graph_state(4, 8)


@pytest.mark.gpu
def test_flashinfer_graph_hooks_replay_what_the_reference_computes() -> None:
    """Capture one layer's attention through `plan_for_capture` on an all-scratch batch, then
    replay it over two different real decode batches (3 rows padded to 4) loaded by
    `plan_for_replay`: each replay's rows match the dense reference."""
    pytest.importorskip("flashinfer")
    from radixserve.runtime.model_executor.cuda_graph_runner import pad_decode_batch

    device, dtype, page_size, bs, scratch = torch.device("cuda"), torch.bfloat16, 16, 4, 512
    # HEADS / KV_HEADS = 4: the tensor-core decode path, whose graph plans need the workspace.
    shape = AttentionShape(HEADS, KV_HEADS, DIM, page_size, dtype, device)
    backend = create_attention_backend("flashinfer", shape)
    assert backend.supports_cuda_graph
    backend.init_cuda_graph_state(max_bs=8, max_pages_per_request=16)
    _, _, _, k_static, v_static = random_batch(page_size, 0, device, dtype, DECODES)
    q_static = torch.zeros(bs, HEADS, DIM, dtype=dtype, device=device)
    out_static = torch.empty(bs, HEADS * DIM, dtype=dtype, device=device)
    layout = backend.plan_for_capture(pad_decode_batch([], bs, page_size, scratch).kv_layout())
    assert layout.batch_size == bs and layout.kv_indptr.numel() == bs + 1
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        backend.forward(q_static, k_static, v_static, shape.scale)  # warm-up outside the graph
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out_static.copy_(backend.forward(q_static, k_static, v_static, shape.scale))
    for seed in (1, 2):
        batch, slices, q, k_cache, v_cache = random_batch(page_size, seed, device, dtype, DECODES)
        slices, q = slices[:3], q[:3]
        k_static.copy_(k_cache)
        v_static.copy_(v_cache)
        q_static.zero_()
        q_static[:3].copy_(q)
        backend.plan_for_replay(pad_decode_batch(slices, bs, page_size, scratch).kv_layout())
        graph.replay()
        ref = dense_reference(slices, q, k_cache, v_cache, page_size, shape.scale).float()
        assert (out_static[:3].float() - ref).abs().max().item() < 2e-2


@pytest.mark.gpu
def test_flashinfer_plans_512_row_graphs_of_the_llama_8b_shape() -> None:
    """Issue 11: the plan of a 512-row decode graph (32 query / 8 KV heads of 128) overflowed a
    128 MiB workspace literal; sized from the configuration, it fits."""
    pytest.importorskip("flashinfer")
    from radixserve.runtime.model_executor.cuda_graph_runner import pad_decode_batch

    shape = AttentionShape(32, 8, 128, 16, torch.bfloat16, torch.device("cuda"))
    backend = create_attention_backend("flashinfer", shape)
    backend.init_cuda_graph_state(max_bs=512, max_pages_per_request=512)
    padded = pad_decode_batch([], 512, 16, scratch_page=0)
    layout = backend.plan_for_capture(padded.kv_layout())
    assert layout.batch_size == 512
    backend.plan_for_replay(padded.kv_layout())
