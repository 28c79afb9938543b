"""The batched sampler: statistics under fixed seeds, determinism, penalties, filters, errors."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.sampling import (
    Sampler,
    SamplingBatchInfo,
    SamplingParams,
    SamplingParamsError,
    check_stop_token,
    token_logprobs,
    top_logprobs,
)

VOCAB = 8
LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
DRAWS = 40_000


def info_for(params: list[SamplingParams], outputs: list[list[int]] | None = None, prompts=None):
    outputs = outputs if outputs is not None else [[] for _ in params]
    prompts = prompts if prompts is not None else [[] for _ in params]
    return SamplingBatchInfo.build(params, prompts, outputs, VOCAB, torch.device("cpu"))


def empirical(params: SamplingParams, logits: torch.Tensor = LOGITS) -> torch.Tensor:
    """Frequencies of DRAWS draws: one batch of DRAWS identical rows, one generator seed."""
    sampler = Sampler(torch.Generator().manual_seed(0))
    out = sampler(logits.repeat(DRAWS, 1), info_for([params] * DRAWS))
    return torch.bincount(out.next_token_ids, minlength=VOCAB).float() / DRAWS


def assert_close(freq: torch.Tensor, expected: torch.Tensor) -> None:
    # 40k draws: a binomial standard error is at most 0.0025, so 0.012 is about 5 sigma.
    assert (freq - expected).abs().max().item() < 0.012, (freq, expected)
    assert torch.all(freq[expected == 0] == 0), "a filtered-out token was drawn"


def renormalized(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    kept = probs * keep
    return kept / kept.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_matches_softmax(temperature: float) -> None:
    freq = empirical(SamplingParams(temperature=temperature))
    assert_close(freq, torch.softmax(LOGITS / temperature, -1))


def test_top_k_keeps_the_k_best() -> None:
    probs = torch.softmax(LOGITS, -1)
    keep = torch.zeros(VOCAB)
    keep[:3] = 1
    assert_close(empirical(SamplingParams(top_k=3)), renormalized(probs, keep))


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.softmax(LOGITS, -1)  # sorted descending already
    cumulative = probs.cumsum(-1)
    keep = ((cumulative - probs) < 0.7).float()  # tokens until the mass reaches 0.7
    assert 1 < keep.sum() < VOCAB
    assert_close(empirical(SamplingParams(top_p=0.7)), renormalized(probs, keep))


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    probs = torch.softmax(LOGITS, -1)
    keep = (probs >= 0.3 * probs.max()).float()
    assert 1 < keep.sum() < VOCAB
    assert_close(empirical(SamplingParams(min_p=0.3)), renormalized(probs, keep))


def test_greedy_is_argmax_and_ignores_the_rng() -> None:
    logits = torch.randn(16, 50)
    info = SamplingBatchInfo.build(
        [SamplingParams(temperature=0)] * 16, [[]] * 16, [[]] * 16, 50, torch.device("cpu")
    )
    out = Sampler()(logits, info)
    assert torch.equal(out.next_token_ids, logits.argmax(-1))


def test_same_seed_same_tokens_regardless_of_batch() -> None:
    logits = torch.randn(1, 1000)
    seeded = SamplingParams(temperature=1.0, seed=42)
    alone = Sampler()(
        logits, SamplingBatchInfo.build([seeded], [[]], [[1, 2]], 1000, torch.device("cpu"))
    )
    others = [SamplingParams(temperature=1.0)] * 3 + [SamplingParams(temperature=0.7, seed=7)]
    batch = torch.cat([torch.randn(2, 1000), logits, torch.randn(2, 1000)])
    params = others[:2] + [seeded] + others[2:]
    outputs = [[], [5], [1, 2], [], [9, 9]]
    info = SamplingBatchInfo.build(params, [[]] * 5, outputs, 1000, torch.device("cpu"))
    mixed = Sampler()(batch, info)
    assert mixed.next_token_ids[2] == alone.next_token_ids[0]


def test_seeded_draws_follow_the_distribution_and_differ_by_seed() -> None:
    # Over many (seed, step) pairs the hash-based uniforms must still sample p exactly.
    n = DRAWS
    params = [SamplingParams(seed=s) for s in range(n)]
    info = SamplingBatchInfo.build(params, [[]] * n, [[]] * n, VOCAB, torch.device("cpu"))
    out = Sampler()(LOGITS.repeat(n, 1), info)
    freq = torch.bincount(out.next_token_ids, minlength=VOCAB).float() / n
    assert_close(freq, torch.softmax(LOGITS, -1))


def test_logprobs_are_from_the_raw_distribution() -> None:
    params = [SamplingParams(temperature=0.3, top_k=2)]
    out = Sampler()(LOGITS.unsqueeze(0), info_for(params), top_logprobs_num=3)
    raw = torch.log_softmax(LOGITS, -1)
    assert out.logprobs[0].item() == pytest.approx(raw[out.next_token_ids[0]].item())
    assert out.top_logprob_ids[0].tolist() == [0, 1, 2]
    assert torch.allclose(out.top_logprob_values[0], raw[:3])


def test_repetition_penalty_lowers_seen_tokens_both_signs() -> None:
    logits = torch.tensor([[2.0, -1.0, 1.0, 0.5]])
    params = [SamplingParams(temperature=0, repetition_penalty=2.0)]
    info = SamplingBatchInfo.build(params, [[0]], [[1]], 4, torch.device("cpu"))
    from radixserve.runtime.sampling.sampler import apply_penalties

    scores = apply_penalties(logits.clone(), info.penalties)
    assert scores.tolist() == [[1.0, -2.0, 1.0, 0.5]]  # 2/2 and -1*2; unseen tokens unchanged
    assert Sampler()(logits, info).next_token_ids.item() == 0  # tie 1.0 vs 1.0: first wins


def test_frequency_and_presence_penalties_count_outputs_only() -> None:
    logits = torch.zeros(1, 4)
    params = [SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)]
    info = SamplingBatchInfo.build(params, [[3, 3]], [[1, 1, 2]], 4, torch.device("cpu"))
    from radixserve.runtime.sampling.sampler import apply_penalties

    scores = apply_penalties(logits.clone(), info.penalties)
    assert scores.tolist() == [[0.0, -1.25, -0.75, 0.0]]


def test_penalty_shifts_the_sampled_distribution() -> None:
    flat = torch.zeros(VOCAB)
    params = SamplingParams(frequency_penalty=2.0)
    n = 20_000
    info = SamplingBatchInfo.build([params] * n, [[]] * n, [[0, 0]] * n, VOCAB, torch.device("cpu"))
    out = Sampler(torch.Generator().manual_seed(1))(flat.repeat(n, 1), info)
    freq = torch.bincount(out.next_token_ids, minlength=VOCAB).float() / n
    expected = torch.softmax(torch.tensor([-4.0] + [0.0] * (VOCAB - 1)), -1)
    assert (freq - expected).abs().max().item() < 0.015


def test_logprob_helpers() -> None:
    logits = torch.randn(5, 30)
    targets = torch.tensor([0, 3, 29, 7, 7])
    expected = torch.log_softmax(logits, -1)[torch.arange(5), targets]
    assert torch.allclose(token_logprobs(logits, targets), expected)
    ids, values = top_logprobs(logits, 4)
    assert torch.equal(ids, logits.topk(4).indices)
    assert torch.allclose(values, torch.log_softmax(logits, -1).topk(4).values)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_new_tokens", -1, "max_new_tokens must be >= 0, got -1"),
        ("temperature", -0.1, "temperature must be >= 0"),
        ("top_p", 0.0, "top_p must be in \\(0, 1\\]"),
        ("top_p", 1.5, "top_p must be in \\(0, 1\\]"),
        ("top_k", -2, "top_k must be -1"),
        ("min_p", 1.5, "min_p must be in \\[0, 1\\]"),
        ("repetition_penalty", 0.0, "repetition_penalty must be > 0"),
        ("frequency_penalty", 3.0, "frequency_penalty must be in"),
        ("n", 0, "n must be >= 1"),
        ("stop", ["ok", ""], "stop strings must not be empty"),
        ("stop_token_ids", [5, 100], "outside the vocabulary"),
    ],
)
def test_bad_params_raise_clear_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(SamplingParamsError, match=message):
        SamplingParams(**{field: value}).validate(vocab_size=50)


def test_stop_token_check() -> None:
    assert check_stop_token(SamplingParams(), 2, {2})
    assert not check_stop_token(SamplingParams(ignore_eos=True), 2, {2})
    assert check_stop_token(SamplingParams(ignore_eos=True, stop_token_ids=[2]), 2, {2})
    assert not check_stop_token(SamplingParams(), 3, {2})
