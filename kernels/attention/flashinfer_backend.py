"""FlashInfer paged attention (GPU): the same layout the torch reference reads, run by FlashInfer.

A batch of decodes only (every extend_len == 1) runs the batch-decode kernel; anything with a
prefill chunk runs the batch-prefill kernel, whose causal mask aligns each request's queries to
the end of its KV (query i sits at position seq_len - extend_len + i), exactly our convention.
A mixed batch whose leading requests decode (the scheduler puts decodes first) runs both: the
decode kernel over those rows and the prefill kernel over the rest. The prefill kernel picks one
query tile for the whole batch from its mean query length, so beside a long chunk each decode row
would fill a 128-row tile with a handful of real rows (its group of query heads) and pay for the
whole tile over its whole context.
Plans are built once per forward pass, lazily at the first layer, because the softmax scale comes
with the layer; every later layer reuses the plan.

Decode CUDA graphs (the hooks of `AttentionBackend`) use one fixed-buffer decode wrapper per
captured batch size, all over the same metadata buffers and one float workspace (only one graph
runs at a time). Workspace sizes follow from the shape, the largest batch and the GPU's SM count
(`float_workspace_bytes`), never from a literal. Graphs of at most `TRITON_DECODE_MAX_BS` rows run
our Triton split-and-merge kernels instead (kernels/attention/triton_decode.py: at batch 1
FlashInfer's kernel and merge took about 10 us a layer for a few hundred KB of KV), over the same
metadata buffers, which their replay fills without a FlashInfer plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...utils.pinned_staging import staging_for
from .base import AttentionBackend, AttentionShape, DecodeGraphLayout, PagedBatchLayout

# The planners' bounds below mirror FlashInfer 0.6's include/flashinfer/attention/scheduler.cuh.
PREFILL_CTAS_PER_SM = 2  # the prefill planner's grid: 2 CTAs per SM
MAX_BLOCKS_PER_SM = 32  # CUDA's resident-block limit per SM bounds the decode kernel's grid
LARGEST_CTA_TILE_Q = 128  # the prefill kernel's largest query tile
FLOAT_BYTES = 4  # split-KV partial outputs and their log-sum-exps are float32
HEADROOM = 1.25  # against small planner changes between FlashInfer releases
# Graphs of up to this many rows take the Triton decode kernels: on the H200 they were faster
# than FlashInfer's up to 4K tokens of context at batch 1 and 2, and at most 6% slower at 16K
# (kernels/attention/triton_decode.py has the table); from batch 4 on, FlashInfer's won at 16K.
TRITON_DECODE_MAX_BS = 2


def uses_tensor_cores(shape: AttentionShape) -> bool:
    """Grouped-query decode with >= 4 query heads per KV head runs the prefill kernel (tensor
    cores); narrower groups run the plain decode kernel."""
    return shape.num_heads // shape.num_kv_heads >= 4


def cta_tile_q(packed_qo_len: int, head_dim: int) -> int:
    """The prefill kernel's query tile for a (packed) query length, on sm_80 and newer."""
    if packed_qo_len > 64 and head_dim < 256:
        return 128
    return 64 if packed_qo_len > 16 else 16


def split_kv_rows(shape: AttentionShape, num_sms: int, graph_bs: int | None) -> int:
    """Rows of float32 partial output per query head that a plan may place in the workspace.

    Split-KV cuts each request's KV into chunks; every (query tile, KV chunk) pair gets a slot of
    `cta_tile_q` rows (prefill kernel) or one row (decode kernel) of partial output:

        tmp_v [heads, padded_batch * tile, head_dim]     tmp_s [heads, padded_batch * tile]

    Eager plans cap padded_batch at the split grid (CTAs / KV heads). A CUDA-graph plan fixes it
    at capture for any batch of `graph_bs` decode rows: at least the grid, and for the prefill
    kernel up to one tile per row plus the packed rows' tiles,

        padded_batch = max(grid / kv_heads, ceil(bs * group / tile) + bs - 1)

    which outgrows a fixed workspace as bs grows (Llama-3.1-8B at bs 512: 639 x 16 rows, 160 MiB).
    """
    kv_heads, group = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads
    prefill_grid = PREFILL_CTAS_PER_SM * num_sms // kv_heads
    decode_grid = MAX_BLOCKS_PER_SM * num_sms // kv_heads
    if graph_bs is None:
        # Eager: the prefill wrapper (any query length) shares the workspace with decode.
        return max(prefill_grid * LARGEST_CTA_TILE_Q, decode_grid)
    if uses_tensor_cores(shape):
        tile = cta_tile_q(group, shape.head_dim)
        tiles = -(-graph_bs * group // tile) + graph_bs - 1
        return max(prefill_grid, tiles) * tile
    return max(decode_grid, graph_bs)


def float_workspace_bytes(shape: AttentionShape, num_sms: int, graph_bs: int | None = None) -> int:
    """The float workspace for eager plans (graph_bs None) or for decode graphs up to graph_bs."""
    rows = split_kv_rows(shape, num_sms, graph_bs)
    needed = shape.num_heads * rows * (shape.head_dim + 1) * FLOAT_BYTES + 2 * 16  # 16-B aligned
    mib = 2**20
    return -(-int(needed * HEADROOM) // mib) * mib


@dataclass(slots=True)
class _GraphState:
    """The fixed buffers every captured decode graph reads, and one wrapper per batch size."""

    workspace: torch.Tensor
    qo_indptr: torch.Tensor  # [max_bs + 1] int32: 0, 1, ..., max_bs (one query row each)
    kv_indptr: torch.Tensor  # [max_bs + 1] int32
    kv_page_indices: torch.Tensor  # [max_bs * max_pages_per_request] int32
    kv_last_page_len: torch.Tensor  # [max_bs] int32
    wrappers: dict[int, Any] = field(default_factory=dict)
    # The Triton kernels' split count per batch size they serve, and their partial outputs.
    triton_splits: dict[int, int] = field(default_factory=dict)
    part_o: torch.Tensor | None = None
    part_lse: torch.Tensor | None = None


class FlashInferAttentionBackend(AttentionBackend):
    supports_cuda_graph = True

    def __init__(self, shape: AttentionShape) -> None:
        super().__init__(shape)
        import flashinfer  # pyright: ignore[reportMissingImports]  # the CPU build never has it

        if shape.device.type != "cuda":
            raise ValueError("the flashinfer attention backend needs a CUDA device")
        self._flashinfer = flashinfer
        self.num_sms = torch.cuda.get_device_properties(shape.device).multi_processor_count
        # Eager wrappers are made at the first plan(): an instance that only serves graphs
        # never allocates their workspace.
        self.workspace: torch.Tensor | None = None
        self.prefill: Any = None
        self.decode: Any = None
        self._graph: _GraphState | None = None
        self._layout: PagedBatchLayout | None = None
        self._planned_scale: float | None = None
        self._is_decode = False
        self._decode_rows = 0
        self._graph_wrapper: Any = None  # set while a graph plan is the one forward() runs
        self._graph_triton_bs = 0  # > 0: the graph being captured runs the Triton kernels

    # --- eager ---------------------------------------------------------------------------------

    def _make_eager_wrappers(self) -> None:
        size = float_workspace_bytes(self.shape, self.num_sms)
        self.workspace = torch.empty(size, dtype=torch.uint8, device=self.shape.device)
        self.prefill = self._flashinfer.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        self.decode = self._flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            self.workspace, "NHD", use_tensor_cores=uses_tensor_cores(self.shape)
        )

    def plan(self, layout: PagedBatchLayout) -> None:
        if self.workspace is None:
            self._make_eager_wrappers()
        self._graph_wrapper = None
        self._graph_triton_bs = 0
        self._layout = layout
        self._planned_scale = None
        extend = layout.extend_lens_cpu
        self._is_decode = all(n == 1 for n in extend)
        self._decode_rows = 0  # > 0: a mixed batch split at that row (see the module docstring)
        if not self._is_decode and layout.kv_indptr_host is not None:
            lead = next((i for i, n in enumerate(extend) if n != 1), len(extend))
            self._decode_rows = lead

    def _plan_now(self, scaling: float, q_dtype: torch.dtype, kv_dtype: torch.dtype) -> None:
        layout = self._layout
        assert layout is not None, "plan() must run before forward()"
        dtypes = (q_dtype, kv_dtype, scaling)
        # Host indptrs: FlashInfer plans on the host and would otherwise copy them back (a sync).
        kv_indptr = layout.host_or_device("kv_indptr")
        last_page_len = layout.host_or_device("kv_last_page_len")
        if self._decode_rows:
            self._plan_split(*dtypes)
        elif self._is_decode:
            self._plan_decode(
                self.decode, kv_indptr, layout.kv_page_indices, last_page_len, *dtypes
            )
        else:
            qo_indptr = layout.host_or_device("qo_indptr")
            pages = layout.kv_page_indices
            self._plan_prefill(qo_indptr, kv_indptr, pages, last_page_len, *dtypes)
        self._planned_scale = scaling

    def _plan_split(self, q_dtype: torch.dtype, kv_dtype: torch.dtype, scaling: float) -> None:
        """Decode rows [0, d) on the decode kernel, the rest on the prefill kernel: each part's
        indptrs start at 0, and the prefill part's page list is a view from its first page."""
        layout, d = self._layout, self._decode_rows
        assert layout is not None and layout.kv_indptr_host is not None
        assert layout.qo_indptr_host is not None and layout.kv_last_page_len_host is not None
        qo = layout.qo_indptr_host.numpy()
        kv = layout.kv_indptr_host.numpy()
        last = layout.kv_last_page_len_host.numpy()
        split = int(kv[d])
        dtypes = (q_dtype, kv_dtype, scaling)
        staging = staging_for(self.shape.device)
        assert staging is not None  # a CUDA device (checked at construction)
        with staging.begin() as staged:  # closed once both plans' copies are enqueued
            pages = layout.kv_page_indices
            self._plan_decode(
                self.decode, staged.host(kv[: d + 1]), pages, staged.host(last[:d]), *dtypes
            )
            self._plan_prefill(
                staged.host(qo[d:] - qo[d]),
                staged.host(kv[d:] - split),
                pages[split:],
                staged.host(last[d:]),
                *dtypes,
            )

    def _plan_decode(
        self,
        wrapper: Any,
        kv_indptr: torch.Tensor,
        kv_page_indices: torch.Tensor,
        kv_last_page_len: torch.Tensor,
        q_dtype: torch.dtype,
        kv_dtype: torch.dtype,
        scaling: float,
    ) -> None:
        """Plans `wrapper` (the eager decode wrapper or a CUDA graph's) over these rows."""
        s = self.shape
        wrapper.plan(
            kv_indptr,
            kv_page_indices,
            kv_last_page_len,
            s.num_heads,
            s.num_kv_heads,
            s.head_dim,
            s.page_size,
            q_data_type=q_dtype,
            kv_data_type=kv_dtype,
            sm_scale=scaling,
        )

    def _plan_prefill(
        self,
        qo_indptr: torch.Tensor,
        kv_indptr: torch.Tensor,
        kv_page_indices: torch.Tensor,
        kv_last_page_len: torch.Tensor,
        q_dtype: torch.dtype,
        kv_dtype: torch.dtype,
        scaling: float,
    ) -> None:
        s = self.shape
        self.prefill.plan(
            qo_indptr,
            kv_indptr,
            kv_page_indices,
            kv_last_page_len,
            s.num_heads,
            s.num_kv_heads,
            s.head_dim,
            s.page_size,
            causal=True,
            sm_scale=scaling,
            q_data_type=q_dtype,
            kv_data_type=kv_dtype,
        )

    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        graph_plan = self._graph_wrapper is not None or self._graph_triton_bs  # capturing
        if graph_plan and scaling != self.shape.scale:
            raise ValueError(
                f"a layer's softmax scale {scaling} differs from the shape's {self.shape.scale}"
                " that CUDA graphs are planned with"
            )
        if self._graph_triton_bs:
            return self._triton_decode(q, k_cache, v_cache)
        if self._graph_wrapper is not None:  # capturing a graph: its plan is already built
            wrapper = self._graph_wrapper
        else:
            if self._planned_scale != scaling:
                self._plan_now(scaling, q.dtype, k_cache.dtype)
            if self._decode_rows:
                q, d = q.contiguous(), self._decode_rows
                out = torch.empty_like(q)
                self.decode.run(q[:d], (k_cache, v_cache), out=out[:d])
                self.prefill.run(q[d:], (k_cache, v_cache), out=out[d:])
                return out.reshape(q.shape[0], -1)
            wrapper = self.decode if self._is_decode else self.prefill
        out = wrapper.run(q.contiguous(), (k_cache, v_cache))
        return out.reshape(q.shape[0], -1)

    def _triton_decode(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor
    ) -> torch.Tensor:
        from . import triton_decode

        state, bs = self._graph_state(), self._graph_triton_bs
        assert state.part_o is not None and state.part_lse is not None
        out = triton_decode.decode(
            q.contiguous(),
            k_cache,
            v_cache,
            state.kv_indptr[: bs + 1],
            state.kv_page_indices,
            state.kv_last_page_len[:bs],
            self.shape.scale,
            state.triton_splits[bs],
            state.part_o,
            state.part_lse,
        )
        return out.reshape(q.shape[0], -1)

    def _triton_decode_sizes(self, max_bs: int) -> range:
        """The graph batch sizes that run the Triton kernels: up to TRITON_DECODE_MAX_BS rows of
        a half-precision shape whose head size fits the kernels' power-of-two tiles, while the
        fused kernels are on (`fused.set_enabled(False)` gives every size to FlashInfer)."""
        from .. import fused

        s = self.shape
        fits = (
            fused.available(torch.empty(0, device=s.device))
            and s.dtype in (torch.float16, torch.bfloat16)
            and s.head_dim & (s.head_dim - 1) == 0
        )
        return range(1, min(max_bs, TRITON_DECODE_MAX_BS) + 1) if fits else range(0)

    # --- decode CUDA graphs --------------------------------------------------------------------

    def init_cuda_graph_state(self, max_bs: int, max_pages_per_request: int) -> None:
        if max_bs < 1 or max_pages_per_request < 1:
            raise ValueError(
                f"CUDA-graph state needs max_bs >= 1 and max_pages_per_request >= 1, got "
                f"{max_bs}, {max_pages_per_request}"
            )
        device = self.shape.device
        i32 = {"dtype": torch.int32, "device": device}
        size = float_workspace_bytes(self.shape, self.num_sms, graph_bs=max_bs)
        self._graph = _GraphState(
            workspace=torch.empty(size, dtype=torch.uint8, device=device),
            qo_indptr=torch.arange(max_bs + 1, **i32),
            kv_indptr=torch.zeros(max_bs + 1, **i32),
            kv_page_indices=torch.zeros(max_bs * max_pages_per_request, **i32),
            kv_last_page_len=torch.ones(max_bs, **i32),
        )
        small = self._triton_decode_sizes(max_bs)
        if small:
            from . import triton_decode

            s, state = self.shape, self._graph
            for bs in small:
                state.triton_splits[bs] = triton_decode.splits_for(bs, s.num_kv_heads, self.num_sms)
            most = max(bs * splits for bs, splits in state.triton_splits.items())
            state.part_o, state.part_lse = triton_decode.partial_buffers(
                most, s.num_heads, s.head_dim, 1, device
            )

    def _graph_state(self) -> _GraphState:
        if self._graph is None:
            raise RuntimeError("init_cuda_graph_state() must run before planning a CUDA graph")
        return self._graph

    def plan_for_capture(self, layout: DecodeGraphLayout) -> PagedBatchLayout:
        state = self._graph_state()
        bs = layout.batch_size
        if bs + 1 > state.kv_indptr.numel():
            raise ValueError(f"batch size {bs} exceeds the CUDA-graph state's largest batch")
        if bs in state.triton_splits:
            self._load_graph_layout(layout)
        else:
            self._plan_capture_wrapper(state, layout)
        return PagedBatchLayout(
            page_size=self.shape.page_size,
            qo_indptr=state.qo_indptr[: bs + 1],
            kv_indptr=state.kv_indptr[: bs + 1],
            kv_page_indices=state.kv_page_indices,
            kv_last_page_len=state.kv_last_page_len[:bs],
            seq_lens_cpu=[1] * bs,  # the captured shape; each replay loads its own lengths
            extend_lens_cpu=[1] * bs,
        )

    def _plan_capture_wrapper(self, state: _GraphState, layout: DecodeGraphLayout) -> None:
        bs = layout.batch_size
        wrapper = self._flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            state.workspace,
            "NHD",
            use_cuda_graph=True,
            use_tensor_cores=uses_tensor_cores(self.shape),
            paged_kv_indptr_buffer=state.kv_indptr[: bs + 1],
            paged_kv_indices_buffer=state.kv_page_indices,
            paged_kv_last_page_len_buffer=state.kv_last_page_len[:bs],
        )
        state.wrappers[bs] = wrapper
        self._plan_graph(wrapper, layout)

    def plan_for_replay(self, layout: DecodeGraphLayout) -> None:
        state = self._graph_state()
        if layout.batch_size in state.triton_splits:
            self._load_graph_layout(layout)
            return
        wrapper = state.wrappers.get(layout.batch_size)
        if wrapper is None:
            raise ValueError(f"no CUDA graph was planned for batch size {layout.batch_size}")
        self._plan_graph(wrapper, layout)

    def _plan_graph(self, wrapper: Any, layout: DecodeGraphLayout) -> None:
        """Copies the layout into the fixed buffers and plans on the host; forward() runs it.

        FlashInfer copies a host page list into its buffer with a blocking copy (a wait for the
        step in flight), and pageable indptrs may wait too: the page list goes up through pinned
        memory first (a device-to-device copy inside the plan then), the indptrs are pinned."""
        s = self.shape
        staging = staging_for(s.device)
        assert staging is not None  # a CUDA device (checked at construction)
        as_int32 = lambda values: np.asarray(values, dtype=np.int32)  # noqa: E731
        with staging.begin() as staged:  # closed once the plan's copies are enqueued
            self._plan_decode(
                wrapper,
                staged.host(as_int32(layout.kv_indptr)),
                staged.upload(as_int32(layout.kv_page_indices)),
                staged.host(as_int32(layout.kv_last_page_len)),
                s.dtype,
                s.dtype,
                s.scale,
            )
        self._graph_wrapper = wrapper
        self._graph_triton_bs = 0

    def _load_graph_layout(self, layout: DecodeGraphLayout) -> None:
        """Copies the layout into the fixed buffers for the Triton kernels (no host planning):
        through pinned memory, so the copies do not wait for the step in flight."""
        state, bs = self._graph_state(), layout.batch_size
        staging = staging_for(self.shape.device)
        assert staging is not None  # a CUDA device (checked at construction)
        pages = np.asarray(layout.kv_page_indices, dtype=np.int32)
        with staging.begin() as staged:  # closed once the copies are enqueued
            for buffer, values in (
                (state.kv_indptr[: bs + 1], np.asarray(layout.kv_indptr, dtype=np.int32)),
                (state.kv_page_indices[: pages.size], pages),
                (state.kv_last_page_len[:bs], np.asarray(layout.kv_last_page_len, np.int32)),
            ):
                buffer.copy_(staged.host(values), non_blocking=True)
        self._graph_wrapper = None
        self._graph_triton_bs = bs
