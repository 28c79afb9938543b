"""The processed distribution (temperature, top-k, top-p, min-p) against a pure-Python reference.

`Sampler.distribution` is what `Sampler.__call__` draws from (test_statistics.py checks that
link); here it is compared, exactly up to float error, with a slow row-by-row reference written
from the documented semantics.
"""

from __future__ import annotations

import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from radixserve.runtime.model_executor.sampling import Sampler
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.model_executor.sampling.helpers import build

MARGIN = 1e-4  # examples with a float32-ambiguous cut-off are skipped, not judged


def reference(logits: list[float], p: SamplingParams) -> list[float]:
    """top-k, then top-p over the renormalized top-k mass, then min-p; ties at a cut stay."""
    vocab_size = len(logits)
    if p.is_greedy:
        best = logits.index(max(logits))
        return [1.0 if i == best else 0.0 for i in range(vocab_size)]
    top = max(logits)
    weights = [math.exp((x - top) / p.temperature) for x in logits]
    probs = [w / sum(weights) for w in weights]
    ranked = sorted(probs, reverse=True)
    k = p.top_k if 0 < p.top_k < vocab_size else vocab_size
    total = sum(ranked[:k])
    cut, mass = 0.0, 0.0
    for value in ranked[:k]:
        if p.top_p < 1:
            assume(abs(mass - p.top_p * total) > MARGIN)
            if mass >= p.top_p * total:
                break
        cut, mass = value, mass + value
    floor = p.min_p * ranked[0]
    assume(all(abs(x - floor) > MARGIN * ranked[0] for x in probs) or p.min_p == 0)
    kept = [x if x >= max(cut, floor) else 0.0 for x in probs]
    return [x / sum(kept) for x in kept]


row_params = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.7]),
    top_p=st.one_of(st.just(1.0), st.floats(0.05, 1.0)),
    top_k=st.sampled_from([-1, 0, 1, 2, 3, 5, 8, 50]),
    min_p=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
)
# Logits on a quarter grid: distinct values differ enough that float32 sees no false ties.
row_logits = st.lists(st.integers(-12, 12).map(lambda x: x / 4), min_size=8, max_size=8)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(row_params, row_logits), min_size=1, max_size=5))
def test_distribution_matches_reference(rows: list[tuple[SamplingParams, list[float]]]) -> None:
    params = [p for p, _ in rows]
    expected = torch.tensor([reference(x, p) for p, x in rows], dtype=torch.float64)
    logits = torch.tensor([x for _, x in rows])
    got = Sampler().distribution(logits, build(params, 8))
    assert torch.allclose(got.double(), expected, atol=1e-5), (params, got, expected)


def test_temperature_scales_logits(device: torch.device) -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 3, device=device)
    params = [SamplingParams(temperature=t) for t in (0.5, 1.0, 2.0)]
    got = Sampler().distribution(logits, build(params, 4, device))
    for row, t in enumerate((0.5, 1.0, 2.0)):
        assert torch.allclose(got[row], torch.softmax(logits[row] / t, -1))


def test_ties_at_the_top_k_cut_are_kept_together() -> None:
    got = Sampler().distribution(
        torch.tensor([[1.0, 1.0, 1.0, 0.0]]), build([SamplingParams(top_k=2)], 4)
    )
    assert torch.allclose(got[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))


def test_min_p_one_keeps_only_the_most_likely() -> None:
    got = Sampler().distribution(
        torch.tensor([[0.5, 2.0, 2.0, 1.0]]), build([SamplingParams(min_p=1.0)], 4)
    )
    assert got[0].tolist() == [0.0, 0.5, 0.5, 0.0]


def test_top_k_alone_takes_the_no_sort_path_with_the_same_result(device: torch.device) -> None:
    logits = torch.randn(3, 500, generator=torch.Generator().manual_seed(0)).to(device)
    params = [SamplingParams(top_k=3), SamplingParams(top_k=40, min_p=0.01), SamplingParams()]
    alone = build(params, 500, device)
    assert not alone.need_top_p and alone.max_top_k == 40
    with_sort = build([*params, SamplingParams(top_p=0.5)], 500, device)
    assert with_sort.need_top_p
    logits4 = torch.cat([logits, logits[:1]])
    a = Sampler().distribution(logits, alone)
    b = Sampler().distribution(logits4, with_sort)[:3]
    assert torch.equal(a, b)
    assert (a[0] > 0).sum() == 3 and (a[2] > 0).all()


def test_top_p_one_never_drops_the_tail_of_a_large_vocabulary(device: torch.device) -> None:
    # Float error in a 100k-long cumsum can reach 1.0 early; a row with top_p = 1 sharing the
    # sort with a top_p < 1 row must still keep every token.
    logits = torch.randn(2, 100_000, generator=torch.Generator().manual_seed(1)).to(device) * 3
    info = build([SamplingParams(), SamplingParams(top_p=0.9)], 100_000, device)
    got = Sampler().distribution(logits, info)
    assert (got[0] > 0).all()
    assert 0 < (got[1] > 0).sum() < 100_000


def test_tiny_temperatures_stay_finite(device: torch.device) -> None:
    logits = torch.tensor([[80.0, 79.0, -80.0, 0.0]] * 2, device=device)
    info = build([SamplingParams(temperature=1e-5), SamplingParams(temperature=1e-7)], 4, device)
    assert info.greedy.tolist() == [False, True]
    got = Sampler().distribution(logits, info)
    assert torch.isfinite(got).all()
    assert got[:, 0].tolist() == [1.0, 1.0]
    assert Sampler()(logits, info).next_token_ids.tolist() == [0, 0]
