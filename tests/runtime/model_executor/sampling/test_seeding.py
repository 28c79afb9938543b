"""Seeded draws: a pure function of (seed, step, logits row), whatever else is in the batch.

Also the counter-based hash itself: exact 32-bit arithmetic, uniforms in [0, 1), and no visible
structure across steps or seeds.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixserve.runtime.model_executor.sampling import Sampler
from radixserve.runtime.model_executor.sampling.seeded import (
    MASK32,
    _mix,
    _mul32,
    seed_to_int64,
    seeded_uniforms,
)
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.model_executor.sampling.helpers import assert_matches_distribution, build

V = 64


def flat_logits(rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.zeros(rows, V, device=device)


def sample_one(
    params: SamplingParams, logits: torch.Tensor, step: int, device: torch.device | str = "cpu"
) -> int:
    info = build([params], logits.shape[-1], device, outputs=[[0] * step])
    return int(Sampler()(logits.view(1, -1).to(device), info).next_token_ids[0])


def test_same_seed_same_token_regardless_of_batch_and_position(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    row = torch.randn(V, generator=gen)
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=1234)
    alone = sample_one(seeded, row, step=5, device=device)
    others = [
        SamplingParams(temperature=0),
        SamplingParams(top_k=3, seed=7),
        SamplingParams(min_p=0.2, frequency_penalty=1.0),
        SamplingParams(),
    ]
    for position in range(len(others) + 1):
        params = others[:position] + [seeded] + others[position:]
        logits = torch.randn(len(params), V, generator=gen)
        logits[position] = row
        outputs = [[1] * (i + 2) for i in range(len(params))]
        outputs[position] = [0] * 5
        info = build(params, V, device, outputs=outputs)
        got = Sampler(seed=position)(logits.to(device), info).next_token_ids[position]
        assert int(got) == alone


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(-(2**63), 2**64 - 1),
    step=st.integers(0, 3000),
    position=st.integers(0, 6),
    others=st.lists(
        st.builds(
            SamplingParams,
            temperature=st.sampled_from([0.0, 0.5, 1.0]),
            top_k=st.sampled_from([-1, 4]),
            top_p=st.sampled_from([1.0, 0.8]),
            seed=st.one_of(st.none(), st.integers(0, 10)),
            presence_penalty=st.sampled_from([0.0, 1.0]),
        ),
        max_size=6,
    ),
)
def test_seeded_token_is_independent_of_batch_composition(
    seed: int, step: int, position: int, others: list[SamplingParams]
) -> None:
    row = torch.linspace(-2.0, 2.0, V)
    seeded = SamplingParams(temperature=1.3, seed=seed)
    position = min(position, len(others))
    params = others[:position] + [seeded] + others[position:]
    logits = torch.randn(len(params), V)
    logits[position] = row
    outputs = [[3] * (i % 3) for i in range(len(params))]
    outputs[position] = [0] * step
    info = build(params, V, outputs=outputs)
    got = Sampler()(logits, info).next_token_ids[position]
    assert int(got) == sample_one(seeded, row, step)


def test_different_seeds_and_steps_give_different_tokens() -> None:
    row = torch.zeros(1000)  # uniform: two independent draws collide with probability 1/1000
    by_seed = {sample_one(SamplingParams(seed=s), row, step=0) for s in range(50)}
    assert len(by_seed) >= 45
    by_step = {sample_one(SamplingParams(seed=9), row, step=t) for t in range(50)}
    assert len(by_step) >= 45
    # Seeds that differ only in their high 32 bits, or in sign, are different seeds.
    high = {sample_one(SamplingParams(seed=s << 32), row, step=0) for s in range(1, 30)}
    assert len(high) >= 25
    assert sample_one(SamplingParams(seed=-5), row, 0) != sample_one(SamplingParams(seed=5), row, 0)


def test_seeded_rows_ignore_the_samplers_generator() -> None:
    params = [SamplingParams(seed=s) for s in range(20)] + [SamplingParams()] * 20
    info = build(params, V)
    a = Sampler(seed=1)(flat_logits(40), info).next_token_ids
    b = Sampler(seed=2)(flat_logits(40), info).next_token_ids
    assert torch.equal(a[:20], b[:20])
    assert not torch.equal(a[20:], b[20:])


def test_unseeded_draws_repeat_with_the_same_generator_seed(device: torch.device) -> None:
    info = build([SamplingParams()] * 32, V, device)
    a = Sampler(seed=3)(flat_logits(32, device), info).next_token_ids
    b = Sampler(seed=3)(flat_logits(32, device), info).next_token_ids
    assert torch.equal(a, b)


def test_hash_is_the_same_on_every_device(device: torch.device) -> None:
    seeds = torch.tensor([0, 1, -1, 2**62, -(2**63)], dtype=torch.int64)
    steps = torch.tensor([0, 7, 2**31, 5, 1], dtype=torch.int64)
    here = seeded_uniforms(seeds.to(device), steps.to(device)).cpu()
    assert torch.equal(here, seeded_uniforms(seeds, steps))


def test_mul32_and_mix_are_exact_32_bit_arithmetic() -> None:
    values = [0, 1, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 0x12345678, 0xDEADBEEF]
    x = torch.tensor(values, dtype=torch.int64)
    for c in (0x7FEB352D, 0x846CA68B, 0xFFFFFFFF, 3):
        assert _mul32(x, c).tolist() == [(v * c) & MASK32 for v in values]
    # A bijection on 32 bits: 2**20 spread-out inputs give 2**20 distinct outputs in range.
    mixed = _mix(torch.arange(2**20, dtype=torch.int64) * 4093)
    assert mixed.unique().numel() == 2**20 and 0 <= mixed.min() and mixed.max() <= MASK32


def test_uniforms_stay_below_one() -> None:
    # u * total must stay below the total mass, or the draw would run past the last token.
    u = seeded_uniforms(torch.arange(100_000), torch.zeros(100_000, dtype=torch.int64))
    assert u.dtype == torch.float64 and (u >= 0).all() and (u <= 1 - 2**-40).all()


def test_hash_uniforms_look_independent_and_uniform() -> None:
    # 256 seeds x 256 steps: uniform histogram, no correlation between neighbouring steps or
    # neighbouring seeds (|r| ~ 1 / sqrt(n) ~ 0.004 for independent values).
    seeds = torch.arange(256, dtype=torch.int64).repeat_interleave(256)
    steps = torch.arange(256, dtype=torch.int64).repeat(256)
    u = seeded_uniforms(seeds, steps).view(256, 256)  # [seed, step]
    counts = torch.histc(u, bins=64, min=0.0, max=1.0)
    assert_matches_distribution(counts, torch.ones(64))
    centered = (u - 0.5) * 12**0.5  # unit variance
    assert abs((centered[:, 1:] * centered[:, :-1]).mean()) < 0.02  # step t vs t + 1
    assert abs((centered[1:] * centered[:-1]).mean()) < 0.02  # seed s vs s + 1
    # Seeds that differ in one bit, high or low, are unrelated too.
    base = torch.zeros(64, dtype=torch.int64)
    one_bit = torch.tensor([seed_to_int64(1 << b) for b in range(64)])
    steps = torch.arange(64)
    r = ((seeded_uniforms(base, steps) - 0.5) * (seeded_uniforms(one_bit, steps) - 0.5)).mean()
    assert abs(r * 12) < 0.5


def test_seeded_draws_follow_the_distribution_across_seeds_and_steps(device: torch.device) -> None:
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    params = SamplingParams(temperature=0.8, top_k=6)
    expected = Sampler().distribution(logits.view(1, -1), build([params], 8))[0]
    n = 30_000
    across_seeds = build(
        [SamplingParams(temperature=0.8, top_k=6, seed=s) for s in range(n)], 8, device
    )
    out = Sampler()(logits.to(device).repeat(n, 1), across_seeds).next_token_ids.cpu()
    assert_matches_distribution(torch.bincount(out, minlength=8), expected)
    # One request over many steps: the same seed, step = 0 .. n-1.
    one_seed = build([SamplingParams(temperature=0.8, top_k=6, seed=77)] * n, 8, device)
    one_seed.steps = torch.arange(n, device=device)
    out = Sampler()(logits.to(device).repeat(n, 1), one_seed).next_token_ids.cpu()
    assert_matches_distribution(torch.bincount(out, minlength=8), expected)
