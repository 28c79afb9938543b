"""Top-k, top-p and min-p as one probability threshold per row.

Each filter keeps the most likely tokens of a row, so together they reduce to a cut-off value:
a token survives when its probability is >= the row's threshold. Working with a value rather
than with sort positions means ties at the cut-off are kept together (as HF does), and the
result does not depend on how a sort orders equal probabilities on one device or another.

Semantics, applied in this order to the temperature-scaled distribution p:
- top_k: keep the k most likely tokens.
- top_p: keep the smallest prefix (by descending probability) of the top-k distribution,
  renormalized, whose mass reaches top_p; the token that crosses top_p stays. (HF, vLLM and
  FlashInfer's top-k-first order; top_p = 1 keeps everything.)
- min_p: drop tokens with p < min_p * max(p). Renormalizing does not change that ratio, so it
  reads the unfiltered maximum.
Survivors are not renormalized here: the inverse-CDF draw in the sampler does not need it.
"""

from __future__ import annotations

import torch

from .batch_info import SamplingBatchInfo


def filter_probs(probs: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
    """[B, V] probabilities -> the same with filtered-out tokens set to 0 (not renormalized)."""
    threshold: torch.Tensor | None = None
    if info.need_top_p:
        threshold = top_k_top_p_threshold(probs, info.top_ks, info.top_ps)
    elif info.max_top_k > 0:
        threshold = top_k_threshold(probs, info.top_ks, info.max_top_k)
    if info.need_min_p:
        min_p = probs.amax(dim=-1, keepdim=True) * info.min_ps.unsqueeze(1)
        threshold = min_p if threshold is None else torch.maximum(threshold, min_p)
    if threshold is None:
        return probs
    return probs.masked_fill(probs < threshold, 0.0)


def top_k_threshold(probs: torch.Tensor, top_ks: torch.Tensor, max_top_k: int) -> torch.Tensor:
    """[B, 1]: each row's k-th largest probability, 0 where top-k is off. Needs no full sort."""
    vocab_size = probs.shape[1]
    best = probs.topk(max_top_k, dim=-1).values  # [B, max_top_k], descending
    position = (top_ks.clamp(max=max_top_k) - 1).unsqueeze(1)
    kth = best.gather(1, position)
    return torch.where(top_ks.unsqueeze(1) < vocab_size, kth, torch.zeros_like(kth))


def top_k_top_p_threshold(
    probs: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor
) -> torch.Tensor:
    """[B, 1]: the smallest probability that survives top-k then top-p (one sort per batch).

    In sorted order (descending), with k = 3 and top_p = 0.7:

        sorted       0.40  0.25  0.15  0.10  ...
        in top-k      yes   yes   yes   no
        mass before  0.00  0.40  0.65  (top-k total 0.80; 0.7 * 0.80 = 0.56)
        kept          yes   yes   no          -> threshold 0.25
    """
    vocab_size = probs.shape[1]
    sorted_probs = probs.sort(dim=-1, descending=True).values
    ranks = torch.arange(vocab_size, device=probs.device).unsqueeze(0)
    in_k = ranks < top_ks.unsqueeze(1)
    kept = sorted_probs.masked_fill(~in_k, 0.0)
    cumulative = kept.cumsum(dim=-1)
    mass_before = cumulative - kept
    total = cumulative[:, -1:]
    # Comparing against top_p * total renormalizes the top-k mass without a division. Rows with
    # top_p = 1 skip the test: float rounding in a long cumsum could otherwise drop their tail.
    top_p = top_ps.unsqueeze(1)
    in_p = (mass_before < top_p * total) | (top_p >= 1.0)
    # Both masks are prefixes of the sorted order, and rank 0 is always in both (k >= 1,
    # top_p > 0), so the count is >= 1 and names the last kept position.
    num_kept = (in_k & in_p).sum(dim=-1, keepdim=True)
    return sorted_probs.gather(1, num_kept - 1)
