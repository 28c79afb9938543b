"""Batched sampling: penalties, temperature, top-k / top-p / min-p, seeded or free draws.

Order per row: penalties -> (greedy rows: argmax) -> temperature -> softmax -> top_k -> top_p
-> min_p -> draw. The draw is an exponential race, argmax(p / E) with E ~ Exp(1), which picks
token v with probability p[v]; it needs no renormalization after filtering. Seeded rows take
their uniforms from a counter-based hash of (seed, step, token id), so a seeded request draws the
same tokens whatever else shares its batch and on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from radixserve.runtime.sampling.batch_info import PenaltyTensors, SamplingBatchInfo

MASK32 = 0xFFFFFFFF


@dataclass(slots=True)
class SampleOutput:
    next_token_ids: torch.Tensor  # [B] int64
    logprobs: torch.Tensor  # [B] float32, from the raw (unprocessed) distribution
    top_logprob_ids: torch.Tensor | None  # [B, K]
    top_logprob_values: torch.Tensor | None  # [B, K]


class Sampler:
    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __call__(
        self, logits: torch.Tensor, info: SamplingBatchInfo, top_logprobs_num: int = 0
    ) -> SampleOutput:
        raw_logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = logits.float()
        if info.penalties is not None:
            scores = apply_penalties(scores, info.penalties)
        argmax = scores.argmax(dim=-1)
        if info.all_greedy:
            next_ids = argmax
        else:
            probs = torch.softmax(scores / info.temperatures, dim=-1)
            if info.need_top_k_or_p:
                probs = filter_top_k_top_p(probs, info.top_ks, info.top_ps)
            if info.need_min_p:
                probs = filter_min_p(probs, info.min_ps)
            next_ids = torch.where(info.greedy, argmax, self._draw(probs, info))
        top_ids = top_values = None
        if top_logprobs_num > 0:
            top_values, top_ids = raw_logprobs.topk(top_logprobs_num, dim=-1)
        return SampleOutput(
            next_token_ids=next_ids,
            logprobs=raw_logprobs.gather(1, next_ids.unsqueeze(1)).squeeze(1),
            top_logprob_ids=top_ids,
            top_logprob_values=top_values,
        )

    def _draw(self, probs: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        if info.all_seeded:
            uniforms = seeded_uniforms(info.seeds, info.steps, probs.shape[1])
        else:
            uniforms = torch.rand(probs.shape, generator=self.generator, device=probs.device)
            if info.any_seeded:
                seeded = seeded_uniforms(info.seeds, info.steps, probs.shape[1])
                uniforms = torch.where(info.seeded.unsqueeze(1), seeded, uniforms)
        exponentials = -torch.log(uniforms.clamp_min(1e-12))
        return (probs / exponentials).argmax(dim=-1)


def apply_penalties(scores: torch.Tensor, penalties: PenaltyTensors) -> torch.Tensor:
    rep = penalties.repetition
    penalized = torch.where(scores > 0, scores / rep, scores * rep)
    scores = torch.where(penalties.seen, penalized, scores)
    scores = scores - penalties.frequency * penalties.output_counts
    return scores - penalties.presence * (penalties.output_counts > 0).float()


def filter_top_k_top_p(
    probs: torch.Tensor, top_ks: torch.Tensor, top_ps: torch.Tensor
) -> torch.Tensor:
    """Zeroes tokens outside each row's top-k and outside its smallest top-p nucleus."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    ranks = torch.arange(probs.shape[1], device=probs.device).unsqueeze(0)
    outside_k = ranks >= top_ks.unsqueeze(1)
    # A token stays while the mass before it is below top_p (so the first token always stays).
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    outside_p = mass_before >= top_ps.unsqueeze(1)
    sorted_probs = sorted_probs.masked_fill(outside_k | outside_p, 0.0)
    return torch.zeros_like(probs).scatter_(1, order, sorted_probs)


def filter_min_p(probs: torch.Tensor, min_ps: torch.Tensor) -> torch.Tensor:
    threshold = probs.max(dim=-1, keepdim=True).values * min_ps.unsqueeze(1)
    return probs.masked_fill(probs < threshold, 0.0)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit integer finalizer on int64 tensors; the multiplier is < 2**31 and x < 2**32, so
    # products stay below 2**63 and never overflow.
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & MASK32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & MASK32
    return x ^ (x >> 16)


def seeded_uniforms(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, V] uniforms in (0, 1), a pure function of (seed, step, token id)."""
    key = _mix32((seeds & MASK32) ^ _mix32((seeds >> 32) + 0x9E3779B9))
    key = _mix32(key ^ _mix32(steps & MASK32))
    token = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    bits = _mix32(key.unsqueeze(1) ^ ((token * 0x27D4EB2D) & MASK32).unsqueeze(0))
    return (bits.double() + 0.5).div(2.0**32).float()
