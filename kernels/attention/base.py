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
from dataclasses import dataclass

import torch


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


@dataclass(slots=True, frozen=True)
class AttentionShape:
    num_heads: int  # query heads on this rank
    num_kv_heads: int  # KV heads on this rank
    head_dim: int
    page_size: int
    dtype: torch.dtype
    device: torch.device


class AttentionBackend(ABC):
    """Paged attention over a ragged batch.

    Contract:
    - `plan` is called once per forward pass, before any layer runs, with the batch's layout; it
      may build index tensors or kernel plans reused by every layer.
    - `forward` gets this layer's queries [T, H, D] (T = total new tokens, rows ordered by request
      as in qo_indptr) and the layer's paged caches [num_pages, page_size, Hkv, D] that already
      contain the new tokens' K/V; it returns [T, H * D].
    - Nothing here allocates KV pages or writes the cache: the KV pool does that.
    """

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
