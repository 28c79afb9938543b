"""The host KV tier's copies on the CPU (synchronous) and how it splits host pages into runs, the
unit of one DMA on a GPU."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from radixserve.runtime.model_executor.kv_pool import HostKVPool, KVPool, contiguous_runs


@given(st.lists(st.integers(0, 40), max_size=30, unique=True))
def test_runs_cover_the_pages_in_order_and_each_is_one_id_range(pages: list[int]) -> None:
    runs = contiguous_runs(np.asarray(pages, dtype=np.int64))
    assert [p for i, j in runs for p in pages[i:j]] == pages
    for i, j in runs:
        assert pages[i:j] == list(range(pages[i], pages[i] + j - i))
    for (_, j), (k, _) in zip(runs, runs[1:], strict=False):
        assert j == k and pages[k] != pages[k - 1] + 1  # a run ends only where ids jump


def test_pages_come_back_through_the_host_in_any_order() -> None:
    pool = KVPool(
        10, 4, num_layers=3, num_kv_heads=2, head_dim=5, dtype=torch.float32,
        device=torch.device("cpu"),
    )  # fmt: skip
    for buf in [*pool.k_buffers, *pool.v_buffers]:
        buf.normal_()
    pages = [1, 5, 6, 9]
    want_k = [buf[pages].clone() for buf in pool.k_buffers]
    want_v = [buf[pages].clone() for buf in pool.v_buffers]
    host = HostKVPool(pool, 8)
    host.write_back(pages, [3, 4, 0, 7])
    for buf in [*pool.k_buffers, *pool.v_buffers]:
        buf[pages] = 0
    assert host.load_back([7, 0, 4, 3], [2, 3, 4, 8]).done()
    back = [8, 4, 3, 2]  # where each of `pages` went
    for layer in range(3):
        assert torch.equal(pool.k_buffers[layer][back], want_k[layer])
        assert torch.equal(pool.v_buffers[layer][back], want_v[layer])
