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

import torch

from ...kernels.attention.base import PagedBatchLayout
from ..scheduler.step import RequestSlice, future_index


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
        cls, slices: Sequence[RequestSlice], page_size: int, device: torch.device
    ) -> ForwardBatch:
        if not slices:
            raise ValueError("a forward batch needs at least one request")
        input_ids: list[int] = []
        positions: list[int] = []
        out_cache_loc: list[int] = []
        page_indices: list[int] = []
        qo_indptr, kv_indptr, last_page_len = [0], [0], []
        logits_rows: list[int] = []
        logits_ranges: list[tuple[int, int]] = []
        max_future_index = -1
        for s in slices:
            seq_len = s.seq_len
            num_pages = -(-seq_len // page_size)
            if s.extend_len < 1:
                raise ValueError("every request in a batch needs at least one new token")
            if len(s.page_table) < num_pages:
                raise ValueError(
                    f"page table has {len(s.page_table)} pages, {num_pages} needed for {seq_len} tokens"
                )
            row0 = len(input_ids)
            if s.input_ids[0] < 0:
                max_future_index = max(max_future_index, future_index(s.input_ids[0]))
            input_ids.extend(s.input_ids)
            new_positions = range(s.prefix_len, seq_len)
            positions.extend(new_positions)
            out_cache_loc.extend(
                s.page_table[p // page_size] * page_size + p % page_size for p in new_positions
            )
            page_indices.extend(s.page_table[:num_pages])
            qo_indptr.append(len(input_ids))
            kv_indptr.append(len(page_indices))
            last_page_len.append(seq_len - (num_pages - 1) * page_size)
            first = s.extend_len - 1 if s.logits_from is None else s.logits_from
            start = len(logits_rows)
            logits_rows.extend(range(row0 + first, row0 + s.extend_len))
            logits_ranges.append((start, len(logits_rows)))

        def as_tensor(values: list[int], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

        hosts = [torch.tensor(v, dtype=torch.int32) for v in (qo_indptr, kv_indptr, last_page_len)]
        qo_host, kv_host, last_host = hosts
        layout = PagedBatchLayout(
            page_size=page_size,
            qo_indptr=qo_host.to(device, non_blocking=True),
            kv_indptr=kv_host.to(device, non_blocking=True),
            kv_page_indices=as_tensor(page_indices, torch.int32),
            kv_last_page_len=last_host.to(device, non_blocking=True),
            seq_lens_cpu=[s.seq_len for s in slices],
            extend_lens_cpu=[s.extend_len for s in slices],
            qo_indptr_host=qo_host,
            kv_indptr_host=kv_host,
            kv_last_page_len_host=last_host,
        )
        return cls(
            input_ids=as_tensor(input_ids, torch.int64),
            positions=as_tensor(positions, torch.int64),
            out_cache_loc=as_tensor(out_cache_loc, torch.int64),
            layout=layout,
            logits_rows=as_tensor(logits_rows, torch.int64),
            logits_ranges=logits_ranges,
            max_future_index=max_future_index,
        )


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
