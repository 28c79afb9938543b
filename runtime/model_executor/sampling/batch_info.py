"""Per-step sampling tensors for a batch, built once from each request's parameters.

Everything the sampler needs is a [B] or [B, 1] tensor, so one set of tensor ops serves every
request in the batch. The Python flags beside the tensors let the sampler skip whole stages
(the sort for top-k / top-p, the random draw, penalties) that no row in this batch needs.

Host values reach the device with non_blocking copies: `torch.tensor(..., device=cuda)` would
wait for the device's queue, and under overlap scheduling that queue holds the previous step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...constrained.bitmask import bitmask_words
from ...wire.sampling_params import SamplingParams
from .penalties import PenaltyTensors
from .seeded import seed_to_int64


@dataclass(slots=True)
class PendingOutputs:
    """Rows whose request has one output more than its `output_ids`: a sample of the previous
    step, still on the device (overlap scheduling). Row `rows[j]`'s token is
    `source[positions[j]]` (the resolved input ids of the forward pass)."""

    rows: list[int]
    source: torch.Tensor
    positions: list[int]

    def token_ids(self) -> torch.Tensor:
        index = torch.tensor(self.positions, dtype=torch.int64)
        return self.source.index_select(0, index.to(self.source.device, non_blocking=True))


@dataclass(slots=True)
class SamplingBatchInfo:
    vocab_size: int
    temperatures: torch.Tensor  # [B, 1] float32; 1.0 on greedy rows (never divided by zero)
    greedy: torch.Tensor  # [B] bool
    top_ps: torch.Tensor  # [B] float32; 1.0 where disabled
    top_ks: torch.Tensor  # [B] int64; vocab_size where disabled
    min_ps: torch.Tensor  # [B] float32; 0.0 where disabled
    seeds: torch.Tensor  # [B] int64, the low 64 bits of each seed (0 on unseeded rows)
    seeded: torch.Tensor  # [B] bool
    steps: torch.Tensor  # [B] int64 tokens generated so far; a seeded draw depends on (seed, step)
    penalties: PenaltyTensors | None  # None when no row uses a penalty
    # [B, W] int32 allowed-token bitmask (structured output); None when no row has a grammar.
    vocab_mask: torch.Tensor | None
    # Sparse additions to the logits, (rows, token ids, values): logit_bias entries, and -inf
    # for tokens banned until min_new_tokens; None when no row has any.
    logit_adjustments: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    all_greedy: bool
    any_greedy: bool
    need_top_p: bool  # some sampled row has top_p < 1 (needs the full sort)
    max_top_k: int  # largest top_k among sampled rows that use one; 0 when none does
    need_min_p: bool
    any_seeded: bool
    all_seeded: bool

    @property
    def batch_size(self) -> int:
        return self.greedy.shape[0]

    @property
    def need_top_k_or_p(self) -> bool:
        return self.need_top_p or self.max_top_k > 0

    @classmethod
    def build(
        cls,
        params: Sequence[SamplingParams],
        prompt_ids: Sequence[Sequence[int]],
        output_ids: Sequence[Sequence[int]],
        vocab_size: int,
        device: torch.device,
        vocab_masks: Sequence[torch.Tensor | None] | None = None,
        banned_token_ids: Sequence[Sequence[int] | None] | None = None,
        pending: PendingOutputs | None = None,
    ) -> SamplingBatchInfo:
        """`params` must be validated; `output_ids[i]` are the tokens request i generated so far;
        `vocab_masks[i]`, when given, is row i's [W] int32 allowed-token bitmask;
        `banned_token_ids[i]` are tokens row i must not sample (EOS before min_new_tokens);
        `pending` names rows with one more output on the device (counted in steps and
        penalties)."""
        if not len(params) == len(prompt_ids) == len(output_ids):
            raise ValueError(
                f"batch lists differ in length: {len(params)} params, "
                f"{len(prompt_ids)} prompts, {len(output_ids)} outputs"
            )

        def tensor(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

        greedy = [p.is_greedy for p in params]
        # Greedy rows get neutral values, so the flags below describe the sampled rows only and
        # a greedy row never triggers (or is affected by) a filter.
        temps = [1.0 if g else p.temperature for p, g in zip(params, greedy, strict=True)]
        top_ps = [1.0 if g else p.top_p for p, g in zip(params, greedy, strict=True)]
        top_ks = [
            vocab_size if g or p.top_k <= 0 else min(p.top_k, vocab_size)
            for p, g in zip(params, greedy, strict=True)
        ]
        min_ps = [0.0 if g else p.min_p for p, g in zip(params, greedy, strict=True)]
        seeded = [p.seed is not None and not g for p, g in zip(params, greedy, strict=True)]
        seeds = [
            seed_to_int64(p.seed) if s and p.seed is not None else 0
            for p, s in zip(params, seeded, strict=True)
        ]
        steps = [len(o) for o in output_ids]
        for row in pending.rows if pending is not None else ():
            steps[row] += 1
        return cls(
            vocab_size=vocab_size,
            temperatures=tensor(temps, torch.float32).unsqueeze(1),
            greedy=tensor(greedy, torch.bool),
            top_ps=tensor(top_ps, torch.float32),
            top_ks=tensor(top_ks, torch.int64),
            min_ps=tensor(min_ps, torch.float32),
            seeds=tensor(seeds, torch.int64),
            seeded=tensor(seeded, torch.bool),
            steps=tensor(steps, torch.int64),
            penalties=PenaltyTensors.build(
                params, prompt_ids, output_ids, vocab_size, device, pending
            ),
            vocab_mask=stack_vocab_masks(vocab_masks, vocab_size, device),
            logit_adjustments=logit_adjustments(params, banned_token_ids, device),
            all_greedy=all(greedy),
            any_greedy=any(greedy),
            need_top_p=any(p < 1.0 for p in top_ps),
            max_top_k=max((k for k in top_ks if k < vocab_size), default=0),
            need_min_p=any(p > 0.0 for p in min_ps),
            any_seeded=any(seeded),
            all_seeded=all(seeded),
        )


def stack_vocab_masks(
    masks: Sequence[torch.Tensor | None] | None, vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    """[B, W] int32 on `device`, all bits set on rows without a mask; None when none has one."""
    if masks is None or all(m is None for m in masks):
        return None
    words = bitmask_words(vocab_size)
    stacked = torch.full((len(masks), words), -1, dtype=torch.int32)
    for row, mask in enumerate(masks):
        if mask is not None:
            stacked[row] = mask
    return stacked.to(device, non_blocking=True)


def logit_adjustments(
    params: Sequence[SamplingParams],
    banned_token_ids: Sequence[Sequence[int] | None] | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(rows, token ids, values) for `index_put(..., accumulate=True)` on [B, V] logits."""
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for row, p in enumerate(params):
        for token, bias in (p.logit_bias or {}).items():
            rows.append(row)
            cols.append(token)
            values.append(bias)
    for row, banned in enumerate(banned_token_ids or ()):
        for token in banned or ():
            rows.append(row)
            cols.append(token)
            values.append(float("-inf"))
    if not rows:
        return None
    return (
        torch.tensor(rows, dtype=torch.int64).to(device, non_blocking=True),
        torch.tensor(cols, dtype=torch.int64).to(device, non_blocking=True),
        torch.tensor(values, dtype=torch.float32).to(device, non_blocking=True),
    )
