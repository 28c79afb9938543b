"""Shared helpers for the sampling tests: batch building, repeated draws, a chi-square check."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from radixserve.runtime.model_executor.sampling import Sampler, SamplingBatchInfo
from radixserve.runtime.wire.sampling_params import SamplingParams

# z for a one-sided tail of 1e-6: with fixed seeds the tests are deterministic, and a change of
# seed or of torch's generator still fails a correct sampler only about once in a million.
Z_ONE_IN_A_MILLION = 4.753


def build(
    params: Sequence[SamplingParams],
    vocab_size: int,
    device: torch.device | str = "cpu",
    prompts: Sequence[Sequence[int]] | None = None,
    outputs: Sequence[Sequence[int]] | None = None,
) -> SamplingBatchInfo:
    empty = [[] for _ in params]
    return SamplingBatchInfo.build(
        params,
        prompts if prompts is not None else empty,
        outputs if outputs is not None else empty,
        vocab_size,
        torch.device(device),
    )


def draw_counts(
    params: SamplingParams,
    logits: torch.Tensor,
    draws: int,
    device: torch.device | str = "cpu",
    generator_seed: int = 0,
) -> torch.Tensor:
    """Token counts [V] from one batch of `draws` identical rows (one vectorized call)."""
    vocab_size = logits.shape[0]
    info = build([params] * draws, vocab_size, device)
    sampler = Sampler(seed=generator_seed)
    out = sampler(logits.to(device).repeat(draws, 1), info)
    return torch.bincount(out.next_token_ids.cpu(), minlength=vocab_size)


def chi_square_critical(dof: int) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile at 1 - 1e-6 (no scipy here)."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + Z_ONE_IN_A_MILLION * math.sqrt(a)) ** 3


def assert_matches_distribution(counts: torch.Tensor, expected: torch.Tensor) -> None:
    """Counts [V] are a plausible sample of `expected` [V]: zero mass never drawn, chi-square."""
    counts = counts.double().cpu()
    expected = expected.double().cpu()
    expected = expected / expected.sum()
    impossible = expected == 0
    assert counts[impossible].sum() == 0, f"drew filtered tokens {impossible.nonzero().tolist()}"
    want, got = _pool_small_bins(expected[~impossible] * counts.sum(), counts[~impossible])
    dof = len(want) - 1
    if dof == 0:
        return  # one possible token (or pooled bin), and it was always drawn
    statistic = sum((g - w) ** 2 / w for w, g in zip(want, got, strict=True))
    assert statistic < chi_square_critical(dof), (statistic, dof, got, want)


def _pool_small_bins(want: torch.Tensor, got: torch.Tensor) -> tuple[list[float], list[float]]:
    """Merges the least likely bins until each expects >= 5 draws (chi-square needs that)."""
    pooled_want: list[float] = []
    pooled_got: list[float] = []
    acc_want = acc_got = 0.0
    for i in want.argsort().tolist():
        acc_want += want[i].item()
        acc_got += got[i].item()
        if acc_want >= 5:
            pooled_want.append(acc_want)
            pooled_got.append(acc_got)
            acc_want = acc_got = 0.0
    assert pooled_want, "too few draws for a chi-square test"
    pooled_want[-1] += acc_want  # a small remainder joins the most likely bin
    pooled_got[-1] += acc_got
    return pooled_want, pooled_got
