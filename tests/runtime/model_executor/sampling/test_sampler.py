"""Sampler.__call__: greedy rows, output shapes, raw logprobs, input errors."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.model_executor.sampling import Sampler, SamplingBatchInfo
from radixserve.runtime.model_executor.sampling.sampler import argmax_rows
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.model_executor.sampling.helpers import build


def test_greedy_is_argmax_and_ignores_the_generator(device: torch.device) -> None:
    logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(0)).to(device)
    greedy_kinds = [SamplingParams(temperature=0), SamplingParams(top_k=1, temperature=2.0)]
    info = build(greedy_kinds * 8, 50, device)
    assert info.all_greedy
    for seed in (0, 1):
        out = Sampler(seed=seed)(logits, info)
        assert torch.equal(out.next_token_ids, logits.argmax(-1))


def test_greedy_rows_in_a_sampled_batch_are_argmax(device: torch.device) -> None:
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(1)).to(device)
    params = [SamplingParams(temperature=0), SamplingParams(temperature=1.5, top_p=0.5)] * 4
    out = Sampler(seed=0)(logits, build(params, 50, device))
    assert torch.equal(out.next_token_ids[0::2], logits[0::2].argmax(-1))


def test_output_shapes_and_dtypes(device: torch.device) -> None:
    logits = torch.randn(3, 20, device=device)
    out = Sampler()(logits, build([SamplingParams()] * 3, 20, device), top_logprobs_num=4)
    assert out.next_token_ids.shape == (3,) and out.next_token_ids.dtype == torch.int64
    assert out.logprobs is not None
    assert out.logprobs.shape == (3,) and out.logprobs.dtype == torch.float32
    assert out.top_logprob_ids is not None and out.top_logprob_values is not None
    assert out.top_logprob_ids.shape == (3, 4) and out.top_logprob_ids.dtype == torch.int64
    assert out.top_logprob_values.shape == (3, 4)
    assert out.top_logprob_values.dtype == torch.float32
    assert out.next_token_ids.device.type == device.type
    plain = Sampler()(logits, build([SamplingParams()] * 3, 20, device))
    assert plain.top_logprob_ids is None and plain.top_logprob_values is None


def test_logprobs_are_from_the_raw_distribution(device: torch.device) -> None:
    # Temperature, top-k and a penalty change what is drawn, never the reported logprobs.
    # The frequency penalty takes token 0 from 2.0 to -2.0, so top-2 keeps tokens 1 and 2.
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0]] * 2, device=device)
    params = [
        SamplingParams(temperature=0.3, top_k=2, frequency_penalty=2.0),
        SamplingParams(temperature=0),
    ]
    info = build(params, 5, device, outputs=[[0, 0], []])
    out = Sampler(seed=0)(logits, info, top_logprobs_num=3)
    raw = torch.log_softmax(logits[0], -1)
    assert int(out.next_token_ids[0]) in (1, 2)
    assert int(out.next_token_ids[1]) == 0
    assert out.logprobs is not None
    assert torch.allclose(out.logprobs, raw[out.next_token_ids])
    assert out.top_logprob_ids is not None and out.top_logprob_values is not None
    assert out.top_logprob_ids.tolist() == [[0, 1, 2]] * 2
    assert torch.allclose(out.top_logprob_values, raw[:3].expand(2, 3))


def test_top_logprobs_num_past_the_vocabulary_is_capped() -> None:
    out = Sampler()(torch.randn(2, 5), build([SamplingParams()] * 2, 5), top_logprobs_num=20)
    assert out.top_logprob_ids is not None and out.top_logprob_ids.shape == (2, 5)


def test_half_precision_logits_are_upcast() -> None:
    logits = torch.randn(2, 30).bfloat16()
    out = Sampler()(logits, build([SamplingParams(temperature=0)] * 2, 30))
    assert torch.equal(out.next_token_ids, logits.float().argmax(-1))
    assert out.logprobs is not None and out.logprobs.dtype == torch.float32


def test_filtered_tokens_are_never_drawn(device: torch.device) -> None:
    # Two survivors in the middle of a 4096 vocabulary: zero-width CDF steps before, between
    # and after them must never be hit, for seeded and unseeded rows alike.
    rows, vocab_size = 2048, 4096
    logits = torch.zeros(rows, vocab_size, device=device)
    logits[:, 10] = logits[:, 20] = 5.0
    params = [SamplingParams(top_k=2, seed=s if s % 2 else None) for s in range(rows)]
    ids = Sampler(seed=0)(logits, build(params, vocab_size, device)).next_token_ids
    assert set(ids.tolist()) == {10, 20}


def test_bad_inputs_raise() -> None:
    info = build([SamplingParams()] * 2, 10)
    with pytest.raises(ValueError, match=r"logits must have shape \(2, 10\), got \(3, 10\)"):
        Sampler()(torch.randn(3, 10), info)
    with pytest.raises(ValueError, match="logits must have shape"):
        Sampler()(torch.randn(2, 10, 1), info)
    with pytest.raises(ValueError, match="logits are on meta but the sampling info on cpu"):
        Sampler()(torch.empty(2, 10, device="meta"), info)
    with pytest.raises(ValueError, match="not both"):
        Sampler(torch.Generator(), seed=1)


def test_the_callers_logits_are_left_alone(device: torch.device) -> None:
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(5)).to(device)
    before = logits.clone()
    params = [
        SamplingParams(repetition_penalty=1.5, seed=1),
        SamplingParams(top_p=0.8, min_p=0.1),
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.5, top_k=3),
    ]
    info = build(params, 30, device, prompts=[[1, 2]] * 4, outputs=[[3]] * 4)
    Sampler(seed=0)(logits, info, top_logprobs_num=2)
    Sampler().distribution(logits, info)
    assert torch.equal(logits, before)


def test_logit_bias_and_banned_tokens(device: torch.device) -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 4, device=device)
    params = [
        SamplingParams(temperature=0, logit_bias={3: 100.0}),  # forces token 3
        SamplingParams(temperature=0, logit_bias={0: -100.0}),  # rules out token 0
        SamplingParams(temperature=0),  # banned below: token 0
        SamplingParams(temperature=1.0, seed=1),  # banned below: tokens 0 and 1
    ]
    info = SamplingBatchInfo.build(
        params, [[]] * 4, [[]] * 4, 4, device, banned_token_ids=[None, None, [0], [0, 1]]
    )
    out = Sampler(seed=0)(logits, info)
    assert out.next_token_ids[:3].tolist() == [3, 1, 1]
    assert int(out.next_token_ids[3]) in (2, 3)
    raw = torch.log_softmax(logits, -1).gather(1, out.next_token_ids.unsqueeze(1)).squeeze(1)
    assert out.logprobs is not None
    assert torch.allclose(out.logprobs, raw)  # reported logprobs stay the model's
    draws = Sampler(seed=0)(
        logits.repeat(64, 1),
        SamplingBatchInfo.build(
            [SamplingParams(temperature=1.0)] * 256,
            [[]] * 256,
            [[]] * 256,
            4,
            device,
            banned_token_ids=[[0, 1]] * 256,
        ),
    )
    assert set(draws.next_token_ids.tolist()) <= {2, 3}


def test_logprobs_only_when_asked(device: torch.device) -> None:
    # Without return_logprobs and top logprobs the vocabulary-wide logsumexp is skipped; the
    # tokens are the same either way, and asking for either still gives the raw logprobs.
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(2)).to(device)
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.8, seed=3)] * 3
    info = build(params, 40, device)
    skipped = Sampler(seed=0)(logits, info, return_logprobs=False)
    asked = Sampler(seed=0)(logits, info, return_logprobs=True)
    top_only = Sampler(seed=0)(logits, info, top_logprobs_num=2, return_logprobs=False)
    assert skipped.logprobs is None and skipped.top_logprob_ids is None
    assert torch.equal(skipped.next_token_ids, asked.next_token_ids)
    raw = torch.log_softmax(logits, -1).gather(1, asked.next_token_ids.unsqueeze(1)).squeeze(1)
    for out in (asked, top_only):
        assert out.logprobs is not None and torch.allclose(out.logprobs, raw)
    assert top_only.top_logprob_ids is not None and top_only.top_logprob_ids.shape == (6, 2)


def test_argmax_rows_picks_as_torch_does(device: torch.device) -> None:
    # Ties go to the first maximum, a NaN counts as the maximum (the first NaN), an all -inf
    # row gives 0; a strided view too (numpy's path on the CPU, torch's elsewhere).
    nan, inf = float("nan"), float("inf")
    rows = [
        [1.0, 5.0, 5.0, 0.0],
        [1.0, nan, 3.0, nan],
        [-inf, -inf, -inf, -inf],
        [inf, 1.0, inf, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
    scores = torch.tensor(rows, device=device)
    got = argmax_rows(scores)
    assert got.dtype == torch.int64 and got.device.type == device.type
    assert got.tolist() == scores.argmax(-1).tolist() == [1, 1, 0, 0, 0]
    wide = torch.randn(8, 1000, generator=torch.Generator().manual_seed(4)).to(device)
    assert torch.equal(argmax_rows(wide[:, 1::2]), wide[:, 1::2].argmax(-1))
