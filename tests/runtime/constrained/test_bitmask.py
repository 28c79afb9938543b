"""apply_token_bitmask against a per-token reference, and the sampler honouring a mask."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.constrained.bitmask import apply_token_bitmask, bitmask_words
from radixserve.runtime.model_executor.sampling import Sampler
from radixserve.runtime.model_executor.sampling.batch_info import stack_vocab_masks
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.model_executor.sampling.helpers import build


def bitmask_of(allowed: torch.Tensor) -> torch.Tensor:
    """[B, V] bool -> [B, W] int32, bit t of word t // 32 set when allowed (two's complement)."""
    rows, vocab = allowed.shape
    words = torch.zeros(rows, bitmask_words(vocab), dtype=torch.int64)
    for t in range(vocab):
        words[:, t // 32] |= allowed[:, t].long() << (t % 32)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


@pytest.mark.parametrize("vocab", [1, 31, 32, 33, 100, 257])
def test_mask_matches_a_per_token_reference(vocab: int) -> None:
    gen = torch.Generator().manual_seed(vocab)
    allowed = torch.rand(5, vocab, generator=gen) < 0.3
    allowed[:, 0] = True
    logits = torch.randn(5, vocab, generator=gen)
    got = apply_token_bitmask(logits, bitmask_of(allowed))
    expected = logits.masked_fill(~allowed, float("-inf"))
    assert torch.equal(got, expected)
    assert torch.equal(logits.isinf(), torch.zeros_like(allowed))  # input untouched


def test_tokens_past_the_mask_are_disallowed() -> None:
    # A model vocabulary padded past the tokenizer's: the extra logits can never be drawn.
    logits = torch.zeros(2, 70)
    mask = torch.full((2, 1), -1, dtype=torch.int32)  # 32 tokens allowed, 38 beyond
    got = apply_token_bitmask(logits, mask)
    assert got[:, :32].eq(0).all() and got[:, 32:].isinf().all()


def test_row_count_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="rows"):
        apply_token_bitmask(torch.zeros(3, 40), torch.zeros(2, 2, dtype=torch.int32))


def test_rows_without_a_mask_allow_everything() -> None:
    one = bitmask_of(torch.tensor([[True, False] * 20]))[0]
    stacked = stack_vocab_masks([None, one, None], 40, torch.device("cpu"))
    assert stacked is not None and stacked.shape == (3, 2)
    assert stacked[0].eq(-1).all() and torch.equal(stacked[1], one)
    assert stack_vocab_masks([None, None], 40, torch.device("cpu")) is None


def test_sampler_draws_only_allowed_tokens_and_reports_raw_logprobs() -> None:
    vocab = 50
    allowed = torch.zeros(1, vocab, dtype=torch.bool)
    allowed[0, [3, 17, 41]] = True
    mask = bitmask_of(allowed)[0]
    logits = torch.randn(64, vocab, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=0)] * 32 + [SamplingParams(temperature=1.5)] * 32
    info = build(params, vocab)
    info.vocab_mask = stack_vocab_masks([mask] * 64, vocab, torch.device("cpu"))
    out = Sampler(seed=0)(logits, info)
    assert set(out.next_token_ids.tolist()) <= {3, 17, 41}
    greedy = logits[:32, [3, 17, 41]].argmax(-1)
    assert out.next_token_ids[:32].tolist() == [[3, 17, 41][i] for i in greedy.tolist()]
    raw = torch.log_softmax(logits, -1).gather(1, out.next_token_ids.unsqueeze(1)).squeeze(1)
    assert torch.allclose(out.logprobs, raw)
