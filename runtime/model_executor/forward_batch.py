"""A ragged batch for one forward pass, built from each request's slice.

All new tokens of all requests are flattened into one row tensor:

    rows:      | r0: prefill chunk (5 tokens) | r1: decode (1) | r2: chunk (3) |
    positions:   p0 .. p0+4                     q0               s0 .. s0+2
    (p0, q0, s0 = each request's prefix_len: the tokens already cached in its pages)

Logits are computed only for the rows that need them: each request's last row, plus every row
from `logits_from` when prompt-token logprobs were asked for.

A slice's first input may be a future placeholder (overlap scheduling): the row's id stays
negative on the host and `resolve_futures` replaces it on the device with the sample it stands
for, from the previous launch's samples by request:

    input_ids   |  17  |  -3  |  5  9  2  |        -3 = future_token(2)
    futures     | a  b  c  d |                     the previous launch's samples, by request
    resolved    |  17  |   c  |  5  9  2  |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...kernels.attention.base import PagedBatchLayout
from ...utils.pinned_staging import StagedCopies
from ..scheduler.step import RequestSlice
from .host_layout import build_host_layout, logits_rows


@dataclass(slots=True)
class ForwardBatch:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    out_cache_loc: torch.Tensor  # [T] int64: KV slot each new token is written to
    layout: PagedBatchLayout
    logits_rows: torch.Tensor  # [N] int64: rows whose hidden states go through the LM head
    logits_ranges: list[tuple[int, int]]  # per request: its [start, end) in the logits rows
    max_future_index: int = -1  # the largest request index a placeholder refers to; -1: none

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @classmethod
    def build(
        cls,
        slices: Sequence[RequestSlice],
        page_size: int,
        device: torch.device,
        staged: StagedCopies | None = None,
    ) -> ForwardBatch:
        """`staged`: on a GPU, every upload goes through pinned memory (utils/pinned_staging.py:
        a copy from pageable memory may wait for the step in flight), and the layout's host
        indptrs stay readable there for FlashInfer's planner: the caller closes it after the
        attention plan."""
        if not slices:
            raise ValueError("a forward batch needs at least one request")
        host = build_host_layout(slices, page_size)
        rows, logits_ranges = logits_rows(slices, host.qo_indptr)

        on_host = torch.from_numpy if staged is None else staged.host

        def on_device(values: np.ndarray) -> torch.Tensor:
            return on_host(values).to(device, non_blocking=True)

        qo_host, kv_host, last_host = (
            on_host(v) for v in (host.qo_indptr, host.kv_indptr, host.kv_last_page_len)
        )
        layout = PagedBatchLayout(
            page_size=page_size,
            qo_indptr=qo_host.to(device, non_blocking=True),
            kv_indptr=kv_host.to(device, non_blocking=True),
            kv_page_indices=on_device(host.kv_page_indices),
            kv_last_page_len=last_host.to(device, non_blocking=True),
            seq_lens_cpu=host.seq_lens.tolist(),
            extend_lens_cpu=host.extend_lens.tolist(),
            qo_indptr_host=qo_host,
            kv_indptr_host=kv_host,
            kv_last_page_len_host=last_host,
        )
        batch = cls(
            input_ids=on_device(host.input_ids),
            positions=on_device(host.positions),
            out_cache_loc=on_device(host.out_cache_loc),
            layout=layout,
            logits_rows=on_device(rows),
            logits_ranges=logits_ranges,
            max_future_index=host.max_future_index,
        )
        return batch


def resolve_futures(
    input_ids: torch.Tensor, futures: torch.Tensor | None, max_future_index: int
) -> None:
    """In place, on the device: each placeholder id becomes the sample it stands for.

    `max_future_index` (known on the host) is checked against the futures' length first: an
    index past it would be a device-side error, which on a GPU ends the process.
    """
    available = 0 if futures is None else futures.numel()
    if futures is None or max_future_index >= available:
        raise ValueError(
            f"a future placeholder refers to request {max_future_index} of the previous launch, "
            f"which sampled for {available} requests"
        )
    index = (-1 - input_ids).clamp_(min=0)
    input_ids.copy_(torch.where(input_ids < 0, futures[index], input_ids))
