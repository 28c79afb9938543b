"""Log-probabilities of given tokens and of each row's most likely tokens."""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """[N, V] logits and [N] targets -> [N] float32 log p(target)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(1, target_ids.long().unsqueeze(1)).squeeze(1)


def top_logprobs(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, V] logits -> ([N, k] token ids, [N, k] float32 log-probabilities), best first."""
    values, ids = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return ids, values
