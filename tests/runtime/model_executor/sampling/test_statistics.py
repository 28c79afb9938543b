"""Empirical frequencies of many draws against the analytically filtered, renormalized softmax.

Each test draws N tokens in one vectorized call (N identical rows, a fixed generator seed) and
runs a chi-square test at a 1e-6 false-alarm level; a filtered-out token must never appear.
The expected distributions are written out here from the definitions, not taken from the
sampler.
"""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.model_executor.sampling import Sampler
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.model_executor.sampling.helpers import (
    assert_matches_distribution,
    build,
    draw_counts,
)

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])  # already in descending order
PROBS = torch.softmax(LOGITS, -1)
DRAWS = 40_000


def renormalized(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    kept = probs * keep
    return kept / kept.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature(device: torch.device, temperature: float) -> None:
    counts = draw_counts(SamplingParams(temperature=temperature), LOGITS, DRAWS, device)
    assert_matches_distribution(counts, torch.softmax(LOGITS / temperature, -1))


@pytest.mark.parametrize("k", [2, 3, 6])
def test_top_k(device: torch.device, k: int) -> None:
    keep = (torch.arange(8) < k).float()
    counts = draw_counts(SamplingParams(top_k=k), LOGITS, DRAWS, device)
    assert_matches_distribution(counts, renormalized(PROBS, keep))


@pytest.mark.parametrize("top_p", [0.3, 0.7, 0.9])
def test_top_p(device: torch.device, top_p: float) -> None:
    # Keep tokens while the mass before them is below top_p: the crossing token stays.
    keep = ((PROBS.cumsum(-1) - PROBS) < top_p).float()
    assert 1 <= keep.sum() < 8
    counts = draw_counts(SamplingParams(top_p=top_p), LOGITS, DRAWS, device)
    assert_matches_distribution(counts, renormalized(PROBS, keep))


@pytest.mark.parametrize("min_p", [0.1, 0.3])
def test_min_p(device: torch.device, min_p: float) -> None:
    keep = (PROBS >= min_p * PROBS.max()).float()
    assert 1 < keep.sum() < 8
    counts = draw_counts(SamplingParams(min_p=min_p), LOGITS, DRAWS, device)
    assert_matches_distribution(counts, renormalized(PROBS, keep))


def test_all_filters_together(device: torch.device) -> None:
    params = SamplingParams(temperature=0.7, top_k=6, top_p=0.9, min_p=0.05)
    scaled = torch.softmax(LOGITS / 0.7, -1)
    top_k = renormalized(scaled, (torch.arange(8) < 6).float())
    keep = ((top_k.cumsum(-1) - top_k) < 0.9).float()  # top-p over the renormalized top-k
    keep *= (scaled >= 0.05 * scaled.max()).float()
    counts = draw_counts(params, LOGITS, DRAWS, device)
    assert_matches_distribution(counts, renormalized(scaled, keep))


def test_a_mixed_batch_samples_each_row_from_its_own_distribution(device: torch.device) -> None:
    # Rows of four kinds interleaved in one batch: each kind's draws match its own law.
    kinds = [
        SamplingParams(temperature=1.5),
        SamplingParams(top_k=2),
        SamplingParams(top_p=0.5, seed=None),
        SamplingParams(min_p=0.3, temperature=0.5),
    ]
    expected = [
        torch.softmax(LOGITS / 1.5, -1),
        renormalized(PROBS, (torch.arange(8) < 2).float()),
        renormalized(PROBS, ((PROBS.cumsum(-1) - PROBS) < 0.5).float()),
    ]
    half = torch.softmax(LOGITS / 0.5, -1)
    expected.append(renormalized(half, (half >= 0.3 * half.max()).float()))
    per_kind = 20_000
    info = build(kinds * per_kind, 8, device)
    out = Sampler(seed=11)(LOGITS.to(device).repeat(4 * per_kind, 1), info).next_token_ids.cpu()
    for kind, law in enumerate(expected):
        assert_matches_distribution(torch.bincount(out[kind::4], minlength=8), law)


def test_the_draw_samples_the_stated_distribution_on_a_large_vocabulary(
    device: torch.device,
) -> None:
    # 500 tokens, random logits, top_p: the inverse-CDF draw over a long row must still give
    # each surviving token its renormalized share (pooled into 20 bins of equal expected mass).
    vocab_size = 500
    logits = torch.randn(vocab_size, generator=torch.Generator().manual_seed(3)) * 2
    params = SamplingParams(temperature=0.9, top_p=0.95)
    law = Sampler().distribution(logits.view(1, -1), build([params], vocab_size))[0]
    draws = 20_000
    info = build([params] * draws, vocab_size, device)
    out = Sampler(seed=4)(logits.to(device).repeat(draws, 1), info).next_token_ids.cpu()
    counts = torch.bincount(out, minlength=vocab_size).double()
    assert counts[law == 0].sum() == 0
    order = law.argsort(descending=True)
    bins = (law[order].double().cumsum(0) * 20).clamp(max=19.999).long()  # equal-mass bins
    pooled_counts = torch.zeros(20, dtype=torch.float64).index_add_(0, bins, counts[order])
    pooled_law = torch.zeros(20, dtype=torch.float64).index_add_(0, bins, law[order].double())
    assert_matches_distribution(pooled_counts, pooled_law)
