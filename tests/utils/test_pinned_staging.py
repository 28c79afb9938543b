"""PinnedStaging's ring bookkeeping on the CPU (unpinned, with recording fences): a region is
handed out again only after the fence that covered its copies was waited for, values survive
until then, and a request larger than the ring grows it."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.utils.pinned_staging import PinnedStaging, _Group, staging_for


class RecordingFence:
    log: list[tuple[str, int]] = []
    count = 0

    def __init__(self) -> None:
        RecordingFence.count += 1
        self.id = RecordingFence.count
        self.waited = False

    def record(self) -> None:
        self.log.append(("record", self.id))

    def synchronize(self) -> None:
        self.waited = True
        self.log.append(("wait", self.id))


def ring(capacity: int = 1024) -> PinnedStaging:
    return PinnedStaging(torch.device("cpu"), capacity, pin=False, new_fence=RecordingFence)


def test_host_copies_values_and_upload_fences() -> None:
    staging = ring()
    values = np.arange(10, dtype=np.int32)
    out = staging.host(values)
    assert out.dtype == torch.int32 and out.tolist() == values.tolist()
    uploaded = staging.upload(np.array([[1, 2], [3, 4]], dtype=np.int64))
    assert uploaded.shape == (2, 2) and uploaded.tolist() == [[1, 2], [3, 4]]
    assert staging._groups[-1].fence is not None  # upload closed its group


def test_a_region_is_reused_only_after_its_fence_was_waited_for() -> None:
    staging = ring(256)
    first = staging.host(np.arange(16, dtype=np.int64))  # 128 bytes at 0
    staging.fence()
    fence = staging._groups[-1].fence
    assert isinstance(fence, RecordingFence)
    staging.host(np.arange(8, dtype=np.int64))  # 64 bytes at 128
    staging.fence()
    assert not fence.waited and first.tolist() == list(range(16))
    staging.host(np.arange(16, dtype=np.int64))  # does not fit: wraps onto the first region
    assert fence.waited


def test_a_request_larger_than_the_ring_grows_it() -> None:
    staging = ring(128)
    staging.host(np.arange(4, dtype=np.int64))
    staging.fence()
    big = staging.host(np.arange(100, dtype=np.int64))
    assert staging.capacity >= 800 and big.tolist() == list(range(100))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=1, max_size=60))
def test_live_regions_never_overlap_unfenced_or_unwaited(requests) -> None:
    """Every tensor handed out keeps its values until a later allocation could only have taken
    its bytes after waiting for the fence that covered it."""
    staging = ring(512)
    live: list[tuple[torch.Tensor, list[int], _Group]] = []
    for n, fence_after in requests:
        values = np.random.randint(0, 1000, size=n).astype(np.int64)
        out = staging.host(values)
        group = staging._groups[-1]
        live.append((out, values.tolist(), group))
        if fence_after:
            staging.fence()
        for tensor, expected, owner in live:
            fence = owner.fence
            if not isinstance(fence, RecordingFence) or not fence.waited:
                assert tensor.tolist() == expected


def test_no_staging_off_the_gpu() -> None:
    assert staging_for(torch.device("cpu")) is None
