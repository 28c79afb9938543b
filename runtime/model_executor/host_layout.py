"""The host-side index arrays of a step, built with numpy rather than Python lists.

A decode step over a few hundred requests with long contexts lists every KV page they read: 500
requests x 200 pages is 100,000 page ids per step. `torch.tensor(list)` converts such a list at
about half a microsecond per element (tens of milliseconds per step on a busy host), while
`np.fromiter` over the page tables themselves costs a small fraction of that and needs no
intermediate list. Per-request scalars (prefix and extend lengths) are read in one pass; every
per-token and per-page array is then derived with vectorized arithmetic:

    slices      | r0: extend 3, prefix 5 | r1: extend 1, prefix 17 |      (page_size 16)
    qo_indptr     0                        3                          4
    positions     5 6 7                    17
    num_pages     1                        2
    kv_indptr     0                        1                          3
    page ids      t0[0]                    t1[0] t1[1]
    KV slot       t0[0]*16 + 5 ...         t1[1]*16 + 1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, islice

import numpy as np

from ..scheduler.step import RequestSlice, future_index


@dataclass(slots=True)
class HostLayout:
    """Every index array of one ragged batch, on the host (numpy, int64 unless noted)."""

    input_ids: np.ndarray  # [T]
    positions: np.ndarray  # [T]
    out_cache_loc: np.ndarray  # [T] KV slot each new token is written to
    qo_indptr: np.ndarray  # [B + 1] int32
    kv_indptr: np.ndarray  # [B + 1] int32
    kv_page_indices: np.ndarray  # [sum of pages] int32
    kv_last_page_len: np.ndarray  # [B] int32
    seq_lens: np.ndarray  # [B]
    extend_lens: np.ndarray  # [B]
    max_future_index: int  # the largest request index a placeholder refers to; -1: none


def build_host_layout(slices: Sequence[RequestSlice], page_size: int) -> HostLayout:
    """The layout of `slices` (see the module docstring); ValueError names what is wrong."""
    n = len(slices)
    prefix = np.fromiter((s.prefix_len for s in slices), np.int64, n)
    extend = np.fromiter((len(s.input_ids) for s in slices), np.int64, n)
    if n and extend.min() < 1:
        raise ValueError("every request in a batch needs at least one new token")
    seq = prefix + extend
    num_pages = -(-seq // page_size)
    table_lens = np.fromiter((len(s.page_table) for s in slices), np.int64, n)
    short = np.flatnonzero(table_lens < num_pages)
    if short.size:
        i = int(short[0])
        raise ValueError(
            f"page table has {table_lens[i]} pages, {num_pages[i]} needed for {seq[i]} tokens"
        )
    total_tokens, total_pages = int(extend.sum()), int(num_pages.sum())
    input_ids = np.fromiter(
        chain.from_iterable(s.input_ids for s in slices), np.int64, total_tokens
    )
    tables = (islice(s.page_table, k) for s, k in zip(slices, num_pages.tolist(), strict=True))
    pages = np.fromiter(chain.from_iterable(tables), np.int32, total_pages)
    qo_indptr = _indptr(extend)
    kv_indptr = _indptr(num_pages)
    # Row t of request r sits at position prefix[r] + (t - qo_indptr[r]).
    positions = np.repeat(prefix - qo_indptr[:-1], extend) + np.arange(total_tokens)
    page_of_row = np.repeat(kv_indptr[:-1].astype(np.int64), extend) + positions // page_size
    out_cache_loc = pages[page_of_row].astype(np.int64) * page_size + positions % page_size
    placeholders = input_ids[input_ids < 0]
    return HostLayout(
        input_ids=input_ids,
        positions=positions,
        out_cache_loc=out_cache_loc,
        qo_indptr=qo_indptr,
        kv_indptr=kv_indptr,
        kv_page_indices=pages,
        kv_last_page_len=(seq - (num_pages - 1) * page_size).astype(np.int32),
        seq_lens=seq,
        extend_lens=extend,
        max_future_index=future_index(int(placeholders.min())) if placeholders.size else -1,
    )


def _indptr(counts: np.ndarray) -> np.ndarray:
    indptr = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def logits_rows(slices: Sequence[RequestSlice], qo_indptr: np.ndarray) -> tuple[np.ndarray, list]:
    """The rows whose hidden states go through the LM head, and each request's [start, end) in
    them: its last row, or every row from `logits_from` when prompt logprobs were asked for."""
    extend = np.diff(qo_indptr).astype(np.int64)
    first = extend - 1
    for i, s in enumerate(slices):
        if s.logits_from is not None:  # prompt logprobs: rarely set, so the loop is short work
            first[i] = s.logits_from
    counts = extend - first
    ends = np.cumsum(counts)
    starts = ends - counts
    total = int(ends[-1]) if len(ends) else 0
    rows = np.repeat(qo_indptr[:-1] + first - starts, counts) + np.arange(total)
    return rows, list(zip(starts.tolist(), ends.tolist(), strict=True))
