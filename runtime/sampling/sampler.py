"""Batched sampling: penalties, temperature, top-k / top-p / min-p, seeded or free draws.

Order per row: penalties -> (greedy rows: argmax) -> temperature -> softmax -> top_k -> top_p
-> min_p -> draw. The draw is an exponential race, argmax(p / E) with E ~ Exp(1) i.i.d. per
token, which picks token v with probability p[v] / sum(p): it samples the renormalized filtered
distribution without computing it. Seeded rows take E from a counter-based hash of (seed, step,
token id) (see seeded.py); the other rows from torch's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixserve.runtime.sampling.batch_info import SamplingBatchInfo
from radixserve.runtime.sampling.filters import filter_probs
from radixserve.runtime.sampling.logprobs import logsumexp_rows
from radixserve.runtime.sampling.seeded import seeded_exponentials

# torch.rand returns values in [0, 1); clamping u away from 0 keeps -log(u) finite, and clamping
# E away from 0 means a filtered token (p = 0) can never produce 0 / 0 = NaN, which argmax picks.
_MIN_UNIFORM = 2.0**-24
_MIN_EXPONENTIAL = torch.finfo(torch.float32).tiny


@dataclass(slots=True)
class SampleOutput:
    next_token_ids: torch.Tensor  # [B] int64
    logprobs: torch.Tensor  # [B] float32: log p(chosen) under the raw logits (the model's own)
    top_logprob_ids: torch.Tensor | None  # [B, K] int64, best first; None when K = 0
    top_logprob_values: torch.Tensor | None  # [B, K] float32, raw distribution


class Sampler:
    """Stateless apart from the optional generator used by unseeded rows.

    `generator` must live on the logits' device; alternatively `seed` makes the sampler create
    one lazily on the first batch's device (so the caller needs no device of its own).
    """

    def __init__(self, generator: torch.Generator | None = None, *, seed: int | None = None):
        if generator is not None and seed is not None:
            raise ValueError("pass a generator or a seed, not both")
        self.generator = generator
        self.seed = seed

    def __call__(
        self, logits: torch.Tensor, info: SamplingBatchInfo, top_logprobs_num: int = 0
    ) -> SampleOutput:
        """[B, V] logits -> one token per row, with raw-distribution logprobs."""
        logits = logits.float()
        self._check_shape(logits, info)
        if info.all_greedy:
            next_ids = self._scores(logits, info).argmax(dim=-1)
        else:
            scores = self._scores(logits, info)
            drawn = self._draw(self._filtered_probs(scores, info), info)
            next_ids = (
                torch.where(info.greedy, scores.argmax(dim=-1), drawn) if info.any_greedy else drawn
            )
        log_norm = logsumexp_rows(logits)
        chosen = logits.gather(1, next_ids.unsqueeze(1)).squeeze(1) - log_norm
        top_ids = top_values = None
        k = min(top_logprobs_num, logits.shape[1])
        if k > 0:
            best, top_ids = logits.topk(k, dim=-1)
            top_values = best - log_norm.unsqueeze(1)
        return SampleOutput(next_ids, chosen, top_ids, top_values)

    def distribution(self, logits: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        """[B, V] the exact distribution each row draws from (greedy rows: one-hot on argmax).

        Not used on the hot path; it states what __call__ samples, for tests and for callers
        that need the processed probabilities themselves.
        """
        logits = logits.float()
        self._check_shape(logits, info)
        scores = self._scores(logits, info)
        probs = self._filtered_probs(scores, info)
        probs = probs / probs.sum(dim=-1, keepdim=True)
        one_hot = torch.zeros_like(probs).scatter_(1, scores.argmax(dim=-1, keepdim=True), 1.0)
        return torch.where(info.greedy.unsqueeze(1), one_hot, probs)

    @staticmethod
    def _check_shape(logits: torch.Tensor, info: SamplingBatchInfo) -> None:
        expected = (info.batch_size, info.vocab_size)
        if logits.dim() != 2 or tuple(logits.shape) != expected:
            raise ValueError(f"logits must have shape {expected}, got {tuple(logits.shape)}")

    @staticmethod
    def _scores(logits: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        return logits if info.penalties is None else info.penalties.apply(logits)

    @staticmethod
    def _filtered_probs(scores: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        probs = torch.softmax(scores / info.temperatures, dim=-1)
        return filter_probs(probs, info)

    def _draw(self, probs: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        if info.all_seeded:
            exponentials = seeded_exponentials(info.seeds, info.steps, info.vocab_size)
        else:
            uniforms = torch.rand(
                probs.shape, generator=self._generator(probs.device), device=probs.device
            )
            exponentials = -torch.log(uniforms.clamp_min_(_MIN_UNIFORM))
            if info.seeded_rows is not None:
                rows = info.seeded_rows
                seeded = seeded_exponentials(info.seeds[rows], info.steps[rows], info.vocab_size)
                exponentials.index_copy_(0, rows, seeded)
        return (probs / exponentials.clamp_min_(_MIN_EXPONENTIAL)).argmax(dim=-1)

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.generator is None and self.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.generator
