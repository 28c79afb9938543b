"""CUDA graphs for decode steps: one captured forward pass per padded batch size, replayed.

A decode step of a large model at small batch is bound by kernel launches (hundreds per step),
not by the GPU: replaying a captured graph launches them all at once. Graphs need fixed shapes
and fixed addresses, so every input lives in a static buffer and a batch of n decodes runs the
graph captured for the smallest size bs >= n, with rows n..bs-1 padded:

    rows        | r0 | r1 | ... | r(n-1) | pad ... pad |      (bs rows)
    input id      t0   t1         t(n-1)   0 ..... 0
    position      p0   p1         p(n-1)   0 ..... 0
    KV slot       real slots               scratch page, offset 0 (KVPool keeps one spare page)
    KV pages      each request's pages     [scratch]      (kv_last_page_len = 1)

The padded rows attend to one token of the scratch page and write only there, so they never touch
a real request's KV; their logits are dropped. This module owns the model's static inputs and
outputs, the padding, capture and replay; the attention metadata goes through the attention
backend's CUDA-graph hooks (`AttentionBackend.plan_for_capture` / `plan_for_replay`), which
keep it in the backend's own fixed buffers and plan it on the host before each replay.
Only pure-decode batches run as graphs; anything with a prefill chunk runs eagerly.

Under overlap scheduling an input id may be a future placeholder: it is loaded as is and resolved
in the static buffer on the device before the replay. The host plan of replay N+1 must not
overwrite FlashInfer's pinned plan buffer before replay N's copy of it has run on the device, so
each replay first waits for the event recorded after the previous plan (by then the device is
past it: the scheduler collected step N-1 before launching N+1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...kernels.attention.base import AttentionBackend, DecodeGraphLayout, PagedBatchLayout
from ...utils.pinned_staging import begin_staging
from ..scheduler.step import RequestSlice
from .forward_batch import ForwardBatch, resolve_futures
from .host_layout import build_host_layout
from .kv_pool import KVPool
from .models.base import CausalLM
from .models.layers.attention import ForwardContext

logger = logging.getLogger(__name__)

# Small sizes one by one (most agentic traffic), then coarser steps: padding adds < 25% rows.
BASE_BATCH_SIZES = (
    *range(1, 9),
    *range(10, 17, 2),
    *range(20, 33, 4),
    *range(40, 65, 8),
    *range(80, 257, 16),
    *range(288, 513, 32),
)


def graph_batch_sizes(max_bs: int) -> list[int]:
    """The captured sizes: BASE_BATCH_SIZES up to max_bs, and max_bs itself."""
    if max_bs < 1:
        raise ValueError(f"the largest CUDA-graph batch must be >= 1, got {max_bs}")
    sizes = [bs for bs in BASE_BATCH_SIZES if bs < max_bs]
    return [*sizes, max_bs]


@dataclass(slots=True)
class PaddedDecode:
    """Host-side inputs of one padded decode batch (see the module docstring's diagram), as
    numpy arrays: int64 per row, int32 for the KV layout."""

    input_ids: np.ndarray
    positions: np.ndarray
    out_cache_loc: np.ndarray
    kv_indptr: np.ndarray
    kv_page_indices: np.ndarray
    kv_last_page_len: np.ndarray
    max_future_index: int = -1  # the largest request index a placeholder refers to; -1: none

    def kv_layout(self) -> DecodeGraphLayout:
        return DecodeGraphLayout(self.kv_indptr, self.kv_page_indices, self.kv_last_page_len)


def pad_decode_batch(
    slices: Sequence[RequestSlice], bs: int, page_size: int, scratch_page: int
) -> PaddedDecode:
    """Lays out n decode slices (extend_len 1 each) as a batch of bs >= n rows (n may be 0:
    the all-padding batch graphs are captured on)."""
    n = len(slices)
    if n > bs:
        raise ValueError(f"{n} decodes do not fit a graph of batch size {bs}")
    real = build_host_layout(slices, page_size)
    if n and real.extend_lens.max() != 1:  # read from the layout: no second pass over slices
        raise ValueError("a CUDA-graph batch holds decodes only (one new token each)")
    pad = bs - n
    # Each padding row reads and writes one slot of the scratch page.
    real_pages = int(real.kv_indptr[-1])
    pad_indptr = np.arange(real_pages + 1, real_pages + pad + 1, dtype=np.int32)
    return PaddedDecode(
        input_ids=np.concatenate([real.input_ids, np.zeros(pad, np.int64)]),
        positions=np.concatenate([real.positions, np.zeros(pad, np.int64)]),
        out_cache_loc=np.concatenate(
            [real.out_cache_loc, np.full(pad, scratch_page * page_size, np.int64)]
        ),
        kv_indptr=np.concatenate([real.kv_indptr, pad_indptr]),
        kv_page_indices=np.concatenate(
            [real.kv_page_indices, np.full(pad, scratch_page, np.int32)]
        ),
        kv_last_page_len=np.concatenate([real.kv_last_page_len, np.ones(pad, np.int32)]),
        max_future_index=real.max_future_index,
    )


@dataclass(slots=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    layout: PagedBatchLayout  # the captured batch's layout (over all bs rows)


class DecodeGraphRunner:
    """Captures decode graphs for `graph_batch_sizes(max_bs)` at start-up and replays them.

    `attention` must support CUDA graphs and serve these graphs only: its fixed buffers are
    what the captured graphs read (see `AttentionBackend`).
    """

    def __init__(
        self,
        model: CausalLM,
        kv_pool: KVPool,
        attention: AttentionBackend,
        max_bs: int,
        max_pages_per_request: int,
    ) -> None:
        if not attention.supports_cuda_graph:
            raise ValueError(f"{type(attention).__name__} does not support CUDA graphs")
        self.model = model
        self.kv_pool = kv_pool
        self.attention = attention
        self.page_size = kv_pool.page_size
        self.sizes = graph_batch_sizes(max_bs)
        self.max_bs = self.sizes[-1]
        attention.init_cuda_graph_state(self.max_bs, max_pages_per_request)
        device = attention.shape.device
        i64 = {"dtype": torch.int64, "device": device}
        self.input_ids = torch.zeros(self.max_bs, **i64)
        self.positions = torch.zeros(self.max_bs, **i64)
        self.out_cache_loc = torch.zeros(self.max_bs, **i64)
        self.logits_rows = torch.arange(self.max_bs, **i64)
        vocab_size = model.config.vocab_size
        self.logits = torch.zeros(self.max_bs, vocab_size, dtype=torch.float32, device=device)
        self.pool = torch.cuda.graph_pool_handle()
        self.plan_copied = torch.cuda.Event()  # recorded after each replay's plan
        self.graphs: dict[int, _Graph] = {}
        for bs in reversed(self.sizes):  # largest first: the smaller ones reuse its memory
            self.graphs[bs] = self._capture(bs)
        logger.info("captured decode CUDA graphs for batch sizes %s", self.sizes)

    def can_run(self, slices: Sequence[RequestSlice]) -> bool:
        return 0 < len(slices) <= self.max_bs and all(s.extend_len == 1 for s in slices)

    def _load_inputs(self, padded: PaddedDecode) -> None:
        bs = len(padded.input_ids)
        staged = begin_staging(self.input_ids.device)
        for buffer, values in (
            (self.input_ids, padded.input_ids),
            (self.positions, padded.positions),
            (self.out_cache_loc, padded.out_cache_loc),
        ):
            source = torch.from_numpy(values) if staged is None else staged.host(values)
            buffer[:bs].copy_(source, non_blocking=True)
        if staged is not None:
            staged.close()

    def _batch(self, n: int, layout: PagedBatchLayout) -> ForwardBatch:
        """The first n rows of the static buffers as a batch (n = bs while capturing)."""
        return ForwardBatch(
            input_ids=self.input_ids[:n],
            positions=self.positions[:n],
            out_cache_loc=self.out_cache_loc[:n],
            layout=layout,
            logits_rows=self.logits_rows[:n],
            logits_ranges=[(i, i + 1) for i in range(n)],
        )

    @torch.inference_mode()
    def _capture(self, bs: int) -> _Graph:
        padded = pad_decode_batch([], bs, self.page_size, self.kv_pool.scratch_page)
        self._load_inputs(padded)
        layout = self.attention.plan_for_capture(padded.kv_layout())
        ctx = ForwardContext(self._batch(bs, layout), self.kv_pool, self.attention)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph: lazy inits, autotuning
                self.model(ctx)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            # Into the shared buffer: the model's own output is pool memory the next capture reuses.
            self.logits[:bs].copy_(self.model(ctx))
        return _Graph(graph, layout)

    @torch.inference_mode()
    def replay(
        self, slices: Sequence[RequestSlice], futures: torch.Tensor | None = None
    ) -> tuple[ForwardBatch, torch.Tensor]:
        """Runs n decodes through the graph of the smallest size >= n; returns n logits rows.
        `futures`: the previous launch's samples by request, for placeholder inputs."""
        n = len(slices)
        bs = next(size for size in self.sizes if size >= n)
        entry = self.graphs[bs]
        padded = pad_decode_batch(slices, bs, self.page_size, self.kv_pool.scratch_page)
        self._load_inputs(padded)
        if padded.max_future_index >= 0:
            resolve_futures(self.input_ids[:n], futures, padded.max_future_index)
        self.plan_copied.synchronize()  # see the module docstring
        self.attention.plan_for_replay(padded.kv_layout())
        self.plan_copied.record()
        entry.graph.replay()
        # The caller reads the n real rows: their inputs, logits and one logits row each.
        return self._batch(n, entry.layout), self.logits[:n]
