"""SamplingBatchInfo.build: per-row tensors, neutral values on greedy rows, skip flags."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.model_executor.sampling.seeded import seed_to_int64
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.model_executor.sampling.helpers import build

V = 100


def test_tensors_shapes_dtypes_and_device(device: torch.device) -> None:
    params = [
        SamplingParams(temperature=0.5, top_p=0.9, seed=3),
        SamplingParams(temperature=0.0, top_p=0.5, top_k=5, min_p=0.2, seed=4),
        SamplingParams(top_k=7, min_p=0.1),
        SamplingParams(top_k=0),
    ]
    info = build(params, V, device, outputs=[[1, 2], [], [3], [4, 5, 6]])
    for t in (info.temperatures, info.greedy, info.top_ps, info.top_ks, info.min_ps):
        assert t.device.type == device.type
    assert info.temperatures.shape == (4, 1) and info.temperatures.dtype == torch.float32
    assert info.temperatures.flatten().tolist() == [0.5, 1.0, 1.0, 1.0]
    assert info.greedy.tolist() == [False, True, False, False]
    # The greedy row's filters are neutral, so it never switches a filter stage on.
    assert info.top_ps.tolist() == pytest.approx([0.9, 1.0, 1.0, 1.0])
    assert info.top_ks.tolist() == [V, V, 7, V] and info.top_ks.dtype == torch.int64
    assert info.min_ps.tolist() == pytest.approx([0.0, 0.0, 0.1, 0.0])
    assert info.steps.tolist() == [2, 0, 1, 3] and info.steps.dtype == torch.int64
    # A greedy row never draws, so its seed is irrelevant.
    assert info.seeded.tolist() == [True, False, False, False]
    assert info.seeds.tolist() == [3, 0, 0, 0] and info.seeds.dtype == torch.int64
    assert info.penalties is None
    assert (info.all_greedy, info.any_greedy) == (False, True)
    assert (info.need_top_p, info.max_top_k, info.need_min_p) == (True, 7, True)
    assert (info.any_seeded, info.all_seeded) == (True, False)
    assert info.batch_size == 4 and info.vocab_size == V


def test_flags_for_plain_temperature_sampling_skip_every_stage() -> None:
    info = build([SamplingParams(temperature=0.7), SamplingParams(top_k=V * 3)], V)
    assert info.top_ks.tolist() == [V, V]  # top_k past the vocabulary is the same as off
    assert not info.need_top_k_or_p and not info.need_min_p and not info.any_seeded
    assert not info.all_greedy


def test_all_greedy_and_all_seeded() -> None:
    greedy = build([SamplingParams(temperature=0), SamplingParams(top_k=1)], V)
    assert greedy.all_greedy and not greedy.need_top_k_or_p
    seeded = build([SamplingParams(seed=1), SamplingParams(seed=2)], V)
    assert seeded.all_seeded and seeded.any_seeded


def test_seeds_keep_all_64_bits() -> None:
    seeds = [-1, 2**63, 2**64 + 5, 5, 2**40 + 5]
    info = build([SamplingParams(seed=s) for s in seeds], V)
    assert info.seeds.tolist() == [-1, -(2**63), 5, 5, 2**40 + 5]
    assert seed_to_int64(2**64 - 1) == -1 and seed_to_int64(2**63 - 1) == 2**63 - 1


def test_mismatched_list_lengths_raise() -> None:
    with pytest.raises(ValueError, match="1 params, 2 prompts, 1 outputs"):
        build([SamplingParams()], V, prompts=[[], []])


def test_empty_batch_builds() -> None:
    info = build([], V)
    assert info.batch_size == 0 and info.all_greedy
