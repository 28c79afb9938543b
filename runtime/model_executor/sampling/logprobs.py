"""Log-probabilities of given tokens and of each row's most likely tokens (raw distribution).

log p(t) = logit[t] - logsumexp(logits): no [N, V] log_softmax is materialized. Prompt
logprobs for a long `select` or loglikelihood request can have thousands of rows, so rows are
processed in chunks, bounding the float32 temporaries (upcast, exp) to CHUNK_ROWS x V.
"""

from __future__ import annotations

import torch

# 1024 rows x a 152k vocabulary is about 600 MB of float32 temporaries per chunk.
CHUNK_ROWS = 1024


def logsumexp_rows(logits: torch.Tensor) -> torch.Tensor:
    """[N, V] -> [N] float32 log of the softmax normalizer, computed CHUNK_ROWS rows at a time."""
    if logits.shape[0] <= CHUNK_ROWS:
        return torch.logsumexp(logits.float(), dim=-1)
    return torch.cat([torch.logsumexp(c.float(), dim=-1) for c in logits.split(CHUNK_ROWS)])


def token_logprobs(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """[N, V] logits and [N] targets (in [0, V)) -> [N] float32 log p(target)."""
    if logits.dim() != 2 or target_ids.shape != logits.shape[:1]:
        raise ValueError(
            f"expected [N, V] logits and [N] targets, got {tuple(logits.shape)} "
            f"and {tuple(target_ids.shape)}"
        )
    picked = logits.gather(1, target_ids.long().unsqueeze(1)).squeeze(1).float()
    return picked - logsumexp_rows(logits)


def top_logprobs(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, V] logits -> ([N, k] int64 token ids, [N, k] float32 log-probabilities), best first.

    k is capped at V; k = 0 gives empty [N, 0] tensors.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = min(k, logits.shape[1])
    values, ids = logits.topk(k, dim=-1)
    return ids, values.float() - logsumexp_rows(logits).unsqueeze(1)
