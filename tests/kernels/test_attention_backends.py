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
@pytest.mark.parametrize("bs", [1, 2, 4])
def test_flashinfer_graph_hooks_replay_what_the_reference_computes(bs: int) -> None:
    """Capture one layer's attention through `plan_for_capture` on an all-scratch batch, then
    replay it over two different real decode batches (min(3, bs) rows padded to bs) loaded by
    `plan_for_replay`: each replay's rows match the dense reference. One and two rows run the
    Triton kernels (TRITON_DECODE_MAX_BS), four FlashInfer's."""
    pytest.importorskip("flashinfer")
    from radixserve.kernels.attention.flashinfer_backend import TRITON_DECODE_MAX_BS
    from radixserve.runtime.model_executor.cuda_graph_runner import pad_decode_batch

    device, dtype, page_size, scratch = torch.device("cuda"), torch.bfloat16, 16, 512
    rows = min(3, bs)
    # HEADS / KV_HEADS = 4: the tensor-core decode path, whose graph plans need the workspace.
    shape = AttentionShape(HEADS, KV_HEADS, DIM, page_size, dtype, device)
    backend = create_attention_backend("flashinfer", shape)
    assert backend.supports_cuda_graph and isinstance(backend, FlashInferAttentionBackend)
    backend.init_cuda_graph_state(max_bs=8, max_pages_per_request=16)
    _, _, _, k_static, v_static = random_batch(page_size, 0, device, dtype, DECODES)
    q_static = torch.zeros(bs, HEADS, DIM, dtype=dtype, device=device)
    out_static = torch.empty(bs, HEADS * DIM, dtype=dtype, device=device)
    layout = backend.plan_for_capture(pad_decode_batch([], bs, page_size, scratch).kv_layout())
    assert layout.batch_size == bs and layout.kv_indptr.numel() == bs + 1
    assert backend._graph_triton_bs == (bs if bs <= TRITON_DECODE_MAX_BS else 0)
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
        slices, q = slices[:rows], q[:rows]
        k_static.copy_(k_cache)
        v_static.copy_(v_cache)
        q_static.zero_()
        q_static[:rows].copy_(q)
        backend.plan_for_replay(pad_decode_batch(slices, bs, page_size, scratch).kv_layout())
        graph.replay()
        ref = dense_reference(slices, q, k_cache, v_cache, page_size, shape.scale).float()
        assert (out_static[:rows].float() - ref).abs().max().item() < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize(("heads", "splits"), [((HEADS, KV_HEADS), 17), ((4, 4), 3)])
def test_triton_decode_matches_reference_over_long_and_short_contexts(
    page_size: int, heads: tuple[int, int], splits: int
) -> None:
    """The Triton split-and-merge decode over contexts from 1 to 3,000 tokens (more splits than
    blocks, empty splits, one block per split, many blocks per split), grouped and plain heads."""
    from radixserve.kernels.attention import triton_decode

    num_heads, kv_heads = heads
    device, dtype = torch.device("cuda"), torch.bfloat16
    lens = [1, 31, 33, 700, 3000]
    gen = torch.Generator().manual_seed(page_size + splits)
    pages_each = [-(-n // page_size) for n in lens]
    total = sum(pages_each)
    order = torch.randperm(total + 7, generator=gen)[:total].to(torch.int32)
    cache_shape = (total + 7, page_size, kv_heads, DIM)
    k_cache = torch.randn(cache_shape, generator=gen).to(device, dtype)
    v_cache = torch.randn(cache_shape, generator=gen).to(device, dtype)
    q = torch.randn(len(lens), num_heads, DIM, generator=gen).to(device, dtype)
    indptr = torch.tensor([0, *torch.tensor(pages_each).cumsum(0).tolist()], dtype=torch.int32)
    last = torch.tensor([n - (p - 1) * page_size for n, p in zip(lens, pages_each, strict=True)])
    part_o, part_lse = triton_decode.partial_buffers(len(lens), num_heads, DIM, splits, device)
    scale = DIM**-0.5
    out = triton_decode.decode(
        q, k_cache, v_cache, indptr.to(device), order.to(device),
        last.to(device, torch.int32), scale, splits, part_o, part_lse,
    )  # fmt: skip
    group = num_heads // kv_heads
    for r, n in enumerate(lens):
        pages = order[indptr[r] : indptr[r + 1]].long().to(device)
        k = k_cache[pages].reshape(-1, kv_heads, DIM)[:n].double().repeat_interleave(group, 1)
        v = v_cache[pages].reshape(-1, kv_heads, DIM)[:n].double().repeat_interleave(group, 1)
        probs = (torch.einsum("hd,khd->hk", q[r].double(), k) * scale).softmax(-1)
        want = torch.einsum("hk,khd->hd", probs, v)
        assert (out[r].double() - want).abs().max().item() < 2e-2, f"row {r}, {n} tokens"


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
