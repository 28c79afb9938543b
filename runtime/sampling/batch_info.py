"""Per-step sampling tensors for a batch, built once from each request's parameters.

Everything the sampler needs is a [B] or [B, 1] tensor, so one set of tensor ops serves every
request in the batch; penalty tensors ([B, V] token counts) exist only when some request asks
for a penalty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from radixserve.runtime.sampling.params import SamplingParams


@dataclass(slots=True)
class PenaltyTensors:
    repetition: torch.Tensor  # [B, 1]
    frequency: torch.Tensor  # [B, 1]
    presence: torch.Tensor  # [B, 1]
    output_counts: torch.Tensor  # [B, V] float: occurrences of each token among the outputs
    seen: torch.Tensor  # [B, V] bool: token occurs in prompt or outputs


@dataclass(slots=True)
class SamplingBatchInfo:
    temperatures: torch.Tensor  # [B, 1]; 1.0 on greedy rows (never divided by zero)
    greedy: torch.Tensor  # [B] bool
    top_ps: torch.Tensor  # [B]
    top_ks: torch.Tensor  # [B] int64; vocab_size where disabled
    min_ps: torch.Tensor  # [B]
    seeds: torch.Tensor  # [B] int64 (0 on unseeded rows)
    seeded: torch.Tensor  # [B] bool
    steps: torch.Tensor  # [B] int64: tokens generated so far; a seeded draw depends on (seed, step)
    penalties: PenaltyTensors | None
    all_greedy: bool
    need_top_k_or_p: bool
    need_min_p: bool
    any_seeded: bool
    all_seeded: bool

    @classmethod
    def build(
        cls,
        params: Sequence[SamplingParams],
        prompt_ids: Sequence[Sequence[int]],
        output_ids: Sequence[Sequence[int]],
        vocab_size: int,
        device: torch.device,
    ) -> SamplingBatchInfo:
        def tensor(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        greedy = [p.is_greedy for p in params]
        top_ks = [p.top_k if p.top_k > 0 else vocab_size for p in params]
        seeded = [p.seed is not None for p in params]
        return cls(
            temperatures=tensor(
                [1.0 if g else p.temperature for p, g in zip(params, greedy, strict=True)],
                torch.float32,
            ).unsqueeze(1),
            greedy=tensor(greedy, torch.bool),
            top_ps=tensor([p.top_p for p in params], torch.float32),
            top_ks=tensor(top_ks, torch.int64),
            min_ps=tensor([p.min_p for p in params], torch.float32),
            seeds=tensor([(p.seed or 0) & 0xFFFFFFFFFFFF for p in params], torch.int64),
            seeded=tensor(seeded, torch.bool),
            steps=tensor([len(o) for o in output_ids], torch.int64),
            penalties=_penalties(params, prompt_ids, output_ids, vocab_size, device),
            all_greedy=all(greedy),
            need_top_k_or_p=any(
                not g and (p.top_p < 1.0 or k < vocab_size)
                for p, g, k in zip(params, greedy, top_ks, strict=True)
            ),
            need_min_p=any(not g and p.min_p > 0 for p, g in zip(params, greedy, strict=True)),
            any_seeded=any(seeded),
            all_seeded=all(seeded),
        )


def _token_counts(
    id_lists: Sequence[Sequence[int]], vocab_size: int, device: torch.device
) -> torch.Tensor:
    """[B, V] float counts via one index_add over the flattened lists."""
    counts = torch.zeros(len(id_lists) * vocab_size, dtype=torch.float32, device=device)
    lengths = torch.tensor([len(ids) for ids in id_lists], device=device)
    flat = torch.tensor([t for ids in id_lists for t in ids], dtype=torch.int64, device=device)
    if flat.numel():
        rows = torch.repeat_interleave(torch.arange(len(id_lists), device=device), lengths)
        counts.index_add_(0, rows * vocab_size + flat, torch.ones_like(flat, dtype=torch.float32))
    return counts.view(len(id_lists), vocab_size)


def _penalties(
    params: Sequence[SamplingParams],
    prompt_ids: Sequence[Sequence[int]],
    output_ids: Sequence[Sequence[int]],
    vocab_size: int,
    device: torch.device,
) -> PenaltyTensors | None:
    if not any(p.uses_penalties for p in params):
        return None

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)

    output_counts = _token_counts(output_ids, vocab_size, device)
    prompt_counts = _token_counts(prompt_ids, vocab_size, device)
    return PenaltyTensors(
        repetition=column([p.repetition_penalty for p in params]),
        frequency=column([p.frequency_penalty for p in params]),
        presence=column([p.presence_penalty for p in params]),
        output_counts=output_counts,
        seen=(output_counts + prompt_counts) > 0,
    )
