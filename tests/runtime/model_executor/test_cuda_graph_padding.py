"""The host-side layout of padded CUDA-graph decode batches (no GPU needed)."""

from __future__ import annotations

import pytest

from radixserve.runtime.model_executor.cuda_graph_runner import graph_batch_sizes, pad_decode_batch
from radixserve.runtime.scheduler.step import RequestSlice

PAGE = 4
SCRATCH = 99


def test_batch_sizes_cover_every_size_up_to_the_max() -> None:
    sizes = graph_batch_sizes(250)
    assert sizes[0] == 1 and sizes[-1] == 250 and sizes == sorted(set(sizes))
    # Every batch of n <= max finds a size with fewer than 25% padding rows.
    for n in range(1, 251):
        bs = next(s for s in sizes if s >= n)
        assert bs - n < 0.25 * n or bs - n <= 1
    # Past the default 256 (cuda_graph_max_bs up to 512), still under 25% padding.
    sizes = graph_batch_sizes(512)
    assert sizes[-1] == 512 and sizes == sorted(set(sizes))
    for n in range(1, 513):
        bs = next(s for s in sizes if s >= n)
        assert bs - n < 0.25 * n or bs - n <= 1
    assert graph_batch_sizes(1) == [1]
    with pytest.raises(ValueError):
        graph_batch_sizes(0)


def test_real_rows_then_padding_rows_on_the_scratch_page() -> None:
    slices = [
        RequestSlice([7], 0, [5]),  # first token of a page
        RequestSlice([8], 5, [2, 9]),  # position 5: page 9, offset 1
        RequestSlice([9], 8, [1, 3, 6]),  # position 8: a new page 6, offset 0
    ]
    batch = pad_decode_batch(slices, 5, PAGE, SCRATCH)
    assert batch.input_ids.tolist() == [7, 8, 9, 0, 0]
    assert batch.positions.tolist() == [0, 5, 8, 0, 0]
    assert batch.out_cache_loc.tolist() == [
        5 * PAGE,
        9 * PAGE + 1,
        6 * PAGE,
        SCRATCH * PAGE,
        SCRATCH * PAGE,
    ]
    assert batch.kv_page_indices.tolist() == [5, 2, 9, 1, 3, 6, SCRATCH, SCRATCH]
    assert batch.kv_indptr.tolist() == [0, 1, 3, 6, 7, 8]
    assert batch.kv_last_page_len.tolist() == [1, 2, 1, 1, 1]
    # What the attention backend plans a graph over: the same KV layout.
    layout = batch.kv_layout()
    assert layout.batch_size == 5
    assert layout.kv_indptr is batch.kv_indptr
    assert layout.kv_page_indices is batch.kv_page_indices
    assert layout.kv_last_page_len is batch.kv_last_page_len


def test_only_pages_in_use_are_listed() -> None:
    # A page table may hold pages reserved ahead; attention must see only the filled ones.
    batch = pad_decode_batch([RequestSlice([1], 3, [4, 5, 6])], 1, PAGE, SCRATCH)
    assert batch.kv_page_indices.tolist() == [4] and batch.kv_last_page_len.tolist() == [4]


def test_prefill_rows_and_oversized_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="decodes only"):
        pad_decode_batch([RequestSlice([1, 2], 0, [0])], 2, PAGE, SCRATCH)
    with pytest.raises(ValueError, match="do not fit"):
        pad_decode_batch([RequestSlice([1], 0, [0])] * 3, 2, PAGE, SCRATCH)
    assert pad_decode_batch([], 2, PAGE, SCRATCH).kv_indptr.tolist() == [0, 1, 2]
