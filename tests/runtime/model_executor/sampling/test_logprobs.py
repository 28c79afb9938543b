"""token_logprobs and top_logprobs (prompt logprobs for `select` and loglikelihood eval)."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.model_executor.sampling import logprobs as logprobs_module
from radixserve.runtime.model_executor.sampling import token_logprobs, top_logprobs


def test_token_logprobs_match_log_softmax(device: torch.device) -> None:
    logits = torch.randn(5, 30, generator=torch.Generator().manual_seed(0)).to(device)
    targets = torch.tensor([0, 3, 29, 7, 7], device=device)
    expected = torch.log_softmax(logits, -1)[torch.arange(5), targets]
    got = token_logprobs(logits, targets)
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-6)


def test_top_logprobs_best_first(device: torch.device) -> None:
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(1)).to(device)
    ids, values = top_logprobs(logits, 4)
    assert torch.equal(ids, logits.topk(4).indices)
    assert torch.allclose(values, torch.log_softmax(logits, -1).topk(4).values, atol=1e-6)
    assert (values[:, :-1] >= values[:, 1:]).all()
    ids, values = top_logprobs(logits, 100)
    assert ids.shape == (4, 30) and torch.allclose(
        values.exp().sum(-1), torch.ones(4, device=device)
    )
    ids, values = top_logprobs(logits, 0)
    assert ids.shape == (4, 0) and values.shape == (4, 0)


def test_many_rows_are_processed_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logprobs_module, "CHUNK_ROWS", 7)
    logits = torch.randn(50, 20, generator=torch.Generator().manual_seed(2)).bfloat16()
    targets = torch.randint(0, 20, (50,), generator=torch.Generator().manual_seed(3))
    reference = torch.log_softmax(logits.float(), -1)
    got = token_logprobs(logits, targets)
    assert got.dtype == torch.float32
    assert torch.allclose(got, reference[torch.arange(50), targets], atol=1e-5)
    _, values = top_logprobs(logits, 3)
    assert torch.allclose(values, reference.topk(3).values, atol=1e-5)


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"expected \[N, V\] logits and \[N\] targets"):
        token_logprobs(torch.randn(3, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="k must be >= 0"):
        top_logprobs(torch.randn(3, 5), -1)
