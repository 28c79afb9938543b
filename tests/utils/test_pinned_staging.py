"""PinnedStaging's ring bookkeeping on the CPU (unpinned, with recording fences): a region is
written again only after the fence its own consumer recorded (after its copies) was waited for;
a region still held by an open consumer is never overwritten (the ring moves to a fresh
buffer); an allocation larger than the ring grows it."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.utils.pinned_staging import PinnedStaging, StagedCopies, staging_for


class RecordingFence:
    count = 0

    def __init__(self) -> None:
        RecordingFence.count += 1
        self.id = RecordingFence.count
        self.recorded = False
        self.waited = False

    def record(self) -> None:
        self.recorded = True

    def synchronize(self) -> None:
        assert self.recorded, "waited for a fence that was never recorded"
        self.waited = True


def ring(capacity: int = 1024) -> PinnedStaging:
    return PinnedStaging(torch.device("cpu"), capacity, pin=False, new_fence=RecordingFence)


def ints(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


def test_host_copies_values_and_upload_fences_its_own_region() -> None:
    staging = ring()
    with staging.begin() as staged:
        out = staged.host(np.arange(10, dtype=np.int32))
        assert out.dtype == torch.int32 and out.tolist() == list(range(10))
        held = staging._regions[-1]
        uploaded = staging.upload(np.array([[1, 2], [3, 4]], dtype=np.int64))
        assert uploaded.shape == (2, 2) and uploaded.tolist() == [[1, 2], [3, 4]]
        assert staging._regions[-1].fence is not None  # the upload fenced its region ...
        assert held.fence is None  # ... and not the open consumer's
    assert held.fence is not None  # closing fenced it


def test_a_region_is_reused_only_after_its_fence_was_waited_for() -> None:
    staging = ring(256)
    with staging.begin() as staged:
        first = staged.host(ints(0, 16))  # 128 bytes at 0
    fence = staging._regions[-1].fence
    assert isinstance(fence, RecordingFence)
    with staging.begin() as staged:
        staged.host(ints(0, 8))  # 64 bytes at 128
    assert not fence.waited and first.tolist() == list(range(16))
    buffer = staging._buffer
    with staging.begin() as staged:
        staged.host(ints(0, 16))  # does not fit at 192: wraps onto the first region
    assert fence.waited and staging._buffer is buffer


def test_an_open_consumers_region_is_never_overwritten() -> None:
    """Another upload's fence does not cover a copy enqueued after it: the ring moves on to a
    fresh buffer rather than write over a region whose consumer has not copied it yet."""
    staging = ring(256)
    held = staging.begin()
    kept = held.host(ints(100, 16))  # 128 bytes at 0, its copy not yet enqueued
    staging.upload(ints(0, 8))  # 64 bytes at 128, fenced at once
    buffer = staging._buffer
    staging.upload(ints(0, 16))  # wraps onto the held region
    assert staging._buffer is not buffer and kept.tolist() == list(range(100, 116))
    held.close()  # late: harmless
    assert kept.tolist() == list(range(100, 116))


def test_a_lap_that_wraps_early_is_still_waited_for() -> None:
    """Lap 2 wraps before it reaches what is left of lap 1 at the ring's end; lap 3 writing
    over lap 2's first region must still wait for lap 2's fence."""
    staging = ring(512)
    for start in (0, 1, 2, 3):
        staging.upload(ints(start, 14))  # lap 1: 4 x 128 bytes
    first_of_lap_2 = staging.begin()
    first_of_lap_2.host(ints(500, 16))  # lap 2 at 0
    first_of_lap_2.close()
    fence = staging._regions[-1].fence
    assert isinstance(fence, RecordingFence)
    staging.upload(ints(0, 14))  # lap 2 at 128; lap 1's regions at 256 and 384 remain
    staging.upload(ints(0, 38))  # 304 bytes at 256 do not fit: lap 3 starts at 0
    assert fence.waited


def test_a_request_larger_than_the_ring_grows_it() -> None:
    staging = ring(128)
    kept = staging.begin().host(ints(0, 4))
    big = staging.upload(ints(0, 100))
    assert staging.capacity >= 800 and big.tolist() == list(range(100))
    assert kept.tolist() == list(range(4))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["open", "host", "close", "upload"]), st.integers(0, 40)),
        min_size=1,
        max_size=80,
    )
)
def test_staged_values_survive_until_their_own_fence_was_waited_for(ops) -> None:
    """Any interleaving of consumers: a staged tensor keeps its values until its own consumer
    closed (recording the fence after its copies) and that very fence was waited for."""
    staging = ring(512)
    open_batches: list[tuple[StagedCopies, list[RecordingFence]]] = []
    live: list[tuple[torch.Tensor, list[int], list[RecordingFence]]] = []
    for op, n in ops:
        if op == "open" or (op == "host" and not open_batches):
            open_batches.append((staging.begin(), []))
        if op == "host":
            batch, its_fence = open_batches[n % len(open_batches)]
            values = np.random.randint(0, 1000, size=n).astype(np.int64)
            live.append((batch.host(values), values.tolist(), its_fence))
        elif op == "close" and open_batches:
            batch, its_fence = open_batches.pop(n % len(open_batches))
            made_before = RecordingFence.count
            batch.close()
            if RecordingFence.count > made_before:  # it staged something: one new fence
                its_fence.append(_newest_fence(staging, RecordingFence.count))
        elif op == "upload":
            staging.upload(np.random.randint(0, 1000, size=n).astype(np.int64))
        for tensor, expected, its_fence in live:
            if not (its_fence and its_fence[0].waited):
                assert tensor.tolist() == expected


def _newest_fence(staging: PinnedStaging, fence_id: int) -> RecordingFence:
    """The fence object with this id, from the regions it was just given to."""
    for region in staging._regions:
        if isinstance(region.fence, RecordingFence) and region.fence.id == fence_id:
            return region.fence
    # Its regions were already dropped (the ring moved to a fresh buffer): never waited for.
    fence = RecordingFence.__new__(RecordingFence)
    fence.id, fence.recorded, fence.waited = fence_id, True, False
    return fence


def test_no_staging_off_the_gpu() -> None:
    assert staging_for(torch.device("cpu")) is None
