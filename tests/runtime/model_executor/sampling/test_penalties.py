"""Penalties: exact values per the documented semantics, counts, row subsets, distributions."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from radixserve.runtime.model_executor.sampling import Sampler
from radixserve.runtime.model_executor.sampling.penalties import PenaltyTensors, token_counts
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.model_executor.sampling.helpers import assert_matches_distribution, build


def apply(params: SamplingParams, logits: list[float], prompt: list[int], output: list[int]):
    info = build([params], len(logits), prompts=[prompt], outputs=[output])
    assert info.penalties is not None
    return info.penalties.apply(torch.tensor([logits]))[0].tolist()


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    # Token 0 seen in the prompt, 1 in the output; 2 and 3 unseen.
    got = apply(SamplingParams(repetition_penalty=2.0), [2.0, -1.0, 1.0, -0.5], [0], [1])
    assert got == [1.0, -2.0, 1.0, -0.5]
    # r < 1 favours seen tokens the opposite way.
    got = apply(SamplingParams(repetition_penalty=0.5), [2.0, -1.0, 1.0, -0.5], [0], [1])
    assert got == [4.0, -0.5, 1.0, -0.5]


def test_repetition_counts_a_token_once_however_often_it_was_seen() -> None:
    got = apply(SamplingParams(repetition_penalty=2.0), [4.0, 4.0], [0, 0, 0], [0, 0])
    assert got == [2.0, 4.0]


def test_frequency_and_presence_penalties_count_outputs_only() -> None:
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)
    got = apply(params, [0.0, 0.0, 0.0, 0.0], [3, 3], [1, 1, 2])
    assert got == [0.0, -1.25, -0.75, 0.0]  # token 3 is only in the prompt: untouched
    negative = SamplingParams(frequency_penalty=-1.0, presence_penalty=-0.5)
    assert apply(negative, [0.0, 0.0], [], [1, 1]) == [0.0, 2.5]


def test_all_three_together_apply_repetition_first() -> None:
    params = SamplingParams(repetition_penalty=2.0, frequency_penalty=1.0, presence_penalty=0.5)
    assert apply(params, [3.0, -3.0, 3.0], [2], [0, 0, 1]) == [-1.0, -7.5, 1.5]


def test_token_counts_match_a_counter(device: torch.device) -> None:
    lists = [[3, 1, 3, 3], [], [0, 9, 9], [5]]
    counts = token_counts(lists, 10, device)
    assert counts.shape == (4, 10) and counts.dtype == torch.float32
    for row, ids in enumerate(lists):
        expected = [Counter(ids)[t] for t in range(10)]
        assert counts[row].tolist() == expected


@pytest.mark.parametrize("bad", [[10], [-1]])
def test_token_ids_outside_the_vocabulary_raise(bad: list[int]) -> None:
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\)"):
        token_counts([[1], bad], 10, torch.device("cpu"))


def test_only_penalized_rows_get_penalty_tensors() -> None:
    params = [SamplingParams(), SamplingParams(frequency_penalty=1.0), SamplingParams()]
    info = build(params, 5, outputs=[[0], [0, 0], [0]])
    pen = info.penalties
    assert isinstance(pen, PenaltyTensors)
    assert pen.rows is not None and pen.rows.tolist() == [1]
    assert pen.output_counts.shape == (1, 5) and pen.seen is None  # no repetition penalty
    logits = torch.ones(3, 5)
    out = pen.apply(logits)
    assert out[0].tolist() == [1.0] * 5 and out[2].tolist() == [1.0] * 5
    assert out[1].tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]
    assert logits.eq(1.0).all()  # the input is not modified
    assert build([SamplingParams()] * 2, 5).penalties is None


def test_penalties_apply_before_greedy_argmax(device: torch.device) -> None:
    logits = torch.tensor([[3.0, 2.9, 0.0], [3.0, 2.9, 0.0]], device=device)
    params = [SamplingParams(temperature=0, repetition_penalty=1.5), SamplingParams(temperature=0)]
    info = build(params, 3, device, outputs=[[0], [0]])
    assert Sampler()(logits, info).next_token_ids.tolist() == [1, 0]


def test_penalized_distribution_is_softmax_of_penalized_logits(device: torch.device) -> None:
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0, 0.2], device=device)
    params = SamplingParams(
        temperature=0.8, repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.3
    )
    prompt, output = [4, 5], [0, 0, 3]
    penalized = torch.tensor(
        [
            1.0 / 1.3 - 0.4 * 2 - 0.3,  # output twice: all three penalties
            0.5,
            0.0,
            -0.5 * 1.3 - 0.4 - 0.3,  # negative logit: multiplied
            2.0 / 1.3,  # prompt only: repetition alone
            0.2 / 1.3,
        ]
    )
    expected = torch.softmax(penalized / 0.8, -1)
    draws = 30_000
    info = build([params] * draws, 6, device, prompts=[prompt] * draws, outputs=[output] * draws)
    batch = logits.repeat(draws, 1)
    dist = Sampler().distribution(batch[:1], build([params], 6, device, [prompt], [output]))
    assert torch.allclose(dist[0].cpu(), expected, atol=1e-6)
    counts = torch.bincount(Sampler(seed=5)(batch, info).next_token_ids.cpu(), minlength=6)
    assert_matches_distribution(counts, expected)
