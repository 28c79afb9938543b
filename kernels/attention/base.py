"""The attention seam: one interface, several backends.

A forward pass over a ragged batch calls `plan(layout)` once and then `forward(...)` once per
layer. The layout is FlashInfer's paged-KV description, so the GPU backend consumes it as is:

    request r owns query rows      qo_indptr[r] : qo_indptr[r+1]        (its new tokens this step)
    and KV pages                   kv_page_indices[kv_indptr[r] : kv_indptr[r+1]]
    whose last page holds          kv_last_page_len[r] tokens (1..page_size)

    seq_len[r] = (num_pages[r] - 1) * page_size + kv_last_page_len[r]   (cached prefix + new tokens)
    query row i of request r sits at position seq_len[r] - extend_len[r] + i and attends to
    positions 0 .. that position (causal over the cached prefix and the chunk itself).

A decode token is simply a request with extend_len == 1, so prefill chunks and decodes mix freely.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

HostInts = Sequence[int] | np.ndarray  # host-side ids: planning reads them without a sync


@dataclass(slots=True)
class PagedBatchLayout:
    page_size: int
    qo_indptr: torch.Tensor  # [B + 1] int32, on the device
    kv_indptr: torch.Tensor  # [B + 1] int32
    kv_page_indices: torch.Tensor  # [sum of pages] int32
    kv_last_page_len: torch.Tensor  # [B] int32
    # Host copies: planning reads them without a device sync.
    seq_lens_cpu: list[int]
    extend_lens_cpu: list[int]
    # Host tensors of the same indptrs, for kernels whose planning runs on the host (FlashInfer);
    # None where a caller has only the device copies.
    qo_indptr_host: torch.Tensor | None = None
    kv_indptr_host: torch.Tensor | None = None
    kv_last_page_len_host: torch.Tensor | None = None

    def host_or_device(self, name: str) -> torch.Tensor:
        """The host copy of an indptr field if there is one, else the device tensor."""
        host = getattr(self, f"{name}_host")
        return host if host is not None else getattr(self, name)

    @property
    def batch_size(self) -> int:
        return len(self.seq_lens_cpu)


@dataclass(slots=True)
class DecodeGraphLayout:
    """The KV layout of one padded decode batch, on the host (int sequences or numpy arrays):
    what a CUDA graph's attention is planned over before capture and before each replay. Every
    row has one query token, so qo_indptr is implicitly 0, 1, ..., bs."""

    kv_indptr: HostInts  # [bs + 1]
    kv_page_indices: HostInts  # [kv_indptr[bs]]
    kv_last_page_len: HostInts  # [bs]

    @property
    def batch_size(self) -> int:
        return len(self.kv_last_page_len)


@dataclass(slots=True, frozen=True)
class AttentionShape:
    num_heads: int  # query heads on this rank
    num_kv_heads: int  # KV heads on this rank
    head_dim: int
    page_size: int
    dtype: torch.dtype  # of the queries and of the KV pool
    device: torch.device
    # The model's softmax scale; a backend plans CUDA graphs with it (no layer runs at replay).
    # None: the usual head_dim ** -0.5.
    softmax_scale: float | None = None

    @property
    def scale(self) -> float:
        return self.softmax_scale if self.softmax_scale is not None else self.head_dim**-0.5


class AttentionBackend(ABC):
    """Paged attention over a ragged batch.

    Contract:
    - `plan` is called once per forward pass, before any layer runs, with the batch's layout; it
      may build index tensors or kernel plans reused by every layer.
    - `forward` gets this layer's queries [T, H, D] (T = total new tokens, rows ordered by request
      as in qo_indptr) and the layer's paged caches [num_pages, page_size, Hkv, D] that already
      contain the new tokens' K/V; it returns [T, H * D].
    - Nothing here allocates KV pages or writes the cache: the KV pool does that.

    Decode CUDA graphs (only where `supports_cuda_graph`): a captured graph replays fixed
    addresses, so the backend owns fixed device buffers for the attention metadata, and the
    model runner drives them through three hooks:

        start-up   init_cuda_graph_state(max_bs, max_pages_per_request)
                      fixed metadata buffers + scratch workspace, sized from these two
        capture    for bs in the graph sizes, largest first:
                      layout = plan_for_capture(padded all-scratch batch of bs rows)
                      capture { model forward; each layer's forward() runs the bs plan }
        replay     plan_for_replay(this step's padded batch of bs rows)
                      copies its indptrs/pages into the fixed buffers, re-plans on the host
                   graph.replay()                      (no Python forward() runs)
        eager      plan(layout): the next forward() runs the eager path again

    `plan_for_capture` returns the layout over the fixed device buffers (what the graph reads).
    One backend instance serves one set of graphs: a second set captured over the same
    instance would overwrite the first set's buffers, so each set gets its own instance.
    """

    supports_cuda_graph: ClassVar[bool] = False

    def __init__(self, shape: AttentionShape) -> None:
        self.shape = shape

    @abstractmethod
    def plan(self, layout: PagedBatchLayout) -> None: ...

    @abstractmethod
    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor: ...

    def init_cuda_graph_state(self, max_bs: int, max_pages_per_request: int) -> None:
        """Allocates the fixed buffers every captured decode graph of up to `max_bs` rows reads."""
        raise NotImplementedError(f"{type(self).__name__} does not support CUDA graphs")

    def plan_for_capture(self, layout: DecodeGraphLayout) -> PagedBatchLayout:
        """Builds the plan for graphs of `layout.batch_size` rows (fixed addresses) and makes it
        the one `forward` runs; returns the layout over the fixed device buffers."""
        raise NotImplementedError(f"{type(self).__name__} does not support CUDA graphs")

    def plan_for_replay(self, layout: DecodeGraphLayout) -> None:
        """Loads this step's padded batch into the fixed buffers of its size's plan, before
        that size's graph replays."""
        raise NotImplementedError(f"{type(self).__name__} does not support CUDA graphs")
