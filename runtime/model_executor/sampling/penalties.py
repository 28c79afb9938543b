"""Repetition, frequency and presence penalties as batched tensor ops.

Semantics (the same as HF for repetition and OpenAI for the other two):
- repetition_penalty r over tokens seen in the prompt or the output: logit > 0 -> logit / r,
  logit <= 0 -> logit * r (r > 1 always makes a seen token less likely).
- frequency_penalty f over output tokens: logit -= f * count.
- presence_penalty p over output tokens: logit -= p * (count > 0).

Only the rows that use a penalty get [P, V] tensors, so one request with a penalty in a large
batch costs one row of vocabulary-sized memory, not B rows. A request whose latest output is
still on the device (overlap scheduling) has it added to its counts there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...wire.sampling_params import SamplingParams

if TYPE_CHECKING:
    from .batch_info import PendingOutputs


@dataclass(slots=True)
class PenaltyTensors:
    rows: torch.Tensor | None  # [P] int64 batch rows with a penalty; None when every row has one
    repetition: torch.Tensor  # [P, 1]
    frequency: torch.Tensor  # [P, 1]
    presence: torch.Tensor  # [P, 1]
    output_counts: torch.Tensor  # [P, V] float32: occurrences of each token among the outputs
    seen: torch.Tensor | None  # [P, V] bool, token in prompt or outputs; None: no repetition

    @classmethod
    def build(
        cls,
        params: Sequence[SamplingParams],
        prompt_ids: Sequence[Sequence[int]],
        output_ids: Sequence[Sequence[int]],
        vocab_size: int,
        device: torch.device,
        pending: PendingOutputs | None = None,
    ) -> PenaltyTensors | None:
        rows = [i for i, p in enumerate(params) if p.uses_penalties]
        if not rows:
            return None
        chosen = [params[i] for i in rows]

        def column(values: list[float]) -> torch.Tensor:
            return _on(device, torch.tensor(values, dtype=torch.float32).unsqueeze(1))

        output_counts = token_counts([output_ids[i] for i in rows], vocab_size, device)
        add_pending_outputs(output_counts, rows, pending)
        seen = None
        if any(p.repetition_penalty != 1.0 for p in chosen):
            seen = output_counts > 0
            prompt_index = flat_token_index([prompt_ids[i] for i in rows], vocab_size, device)
            seen.view(-1).index_fill_(0, prompt_index, True)
        return cls(
            rows=None if len(rows) == len(params) else _on(device, torch.tensor(rows)),
            repetition=column([p.repetition_penalty for p in chosen]),
            frequency=column([p.frequency_penalty for p in chosen]),
            presence=column([p.presence_penalty for p in chosen]),
            output_counts=output_counts,
            seen=seen,
        )

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """[B, V] logits -> penalized logits (a new tensor; the input is left alone)."""
        sub = scores if self.rows is None else scores.index_select(0, self.rows)
        if self.seen is not None:
            penalized = torch.where(sub > 0, sub / self.repetition, sub * self.repetition)
            sub = torch.where(self.seen, penalized, sub)
        sub = sub - self.frequency * self.output_counts
        sub = sub - self.presence * (self.output_counts > 0).float()
        return sub if self.rows is None else scores.index_copy(0, self.rows, sub)


def add_pending_outputs(
    counts: torch.Tensor, rows: list[int], pending: PendingOutputs | None
) -> None:
    """Counts, on the device, the pending output of each penalized row that has one."""
    if pending is None:
        return
    penalty_row = {row: p for p, row in enumerate(rows)}
    taken = [j for j, row in enumerate(pending.rows) if row in penalty_row]
    if not taken:
        return
    device = counts.device
    tokens = pending.token_ids().index_select(0, _on(device, torch.tensor(taken)))
    where = _on(device, torch.tensor([penalty_row[pending.rows[j]] for j in taken]))
    counts.index_put_((where, tokens), torch.ones(len(taken), device=device), accumulate=True)


def token_counts(
    id_lists: Sequence[Sequence[int]], vocab_size: int, device: torch.device
) -> torch.Tensor:
    """[B, V] float32 counts from one scatter_add over the flattened lists."""
    index = flat_token_index(id_lists, vocab_size, device)
    counts = torch.zeros(len(id_lists) * vocab_size, dtype=torch.float32, device=device)
    counts.scatter_add_(0, index, torch.ones(index.shape, dtype=torch.float32, device=device))
    return counts.view(len(id_lists), vocab_size)


def flat_token_index(
    id_lists: Sequence[Sequence[int]], vocab_size: int, device: torch.device
) -> torch.Tensor:
    """[sum of lengths] int64 positions in a flattened [B, V] tensor: row b, token t -> b * V + t.

        row 0: ids [3, 3, 1]  ->  0*V+3, 0*V+3, 0*V+1
        row 1: ids [2]        ->  1*V+2

    Built with numpy on the host (prompts make this tens of thousands of ids per step, and
    torch's per-element list conversion is several times slower), so the range check needs no
    device synchronization.
    """
    lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    total = int(lengths.sum())
    flat = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=total)
    if total and (flat.min() < 0 or flat.max() >= vocab_size):
        # An id past the vocabulary would silently count into the next row's token.
        bad = int(flat.min()) if flat.min() < 0 else int(flat.max())
        raise ValueError(f"token ids must be in [0, {vocab_size}), got {bad}")
    index = np.repeat(np.arange(len(id_lists), dtype=np.int64) * vocab_size, lengths) + flat
    return _on(device, torch.from_numpy(index))


def _on(device: torch.device, host: torch.Tensor) -> torch.Tensor:
    """A host tensor on `device` without waiting for the device's queue (see batch_info.py)."""
    return host.to(device, non_blocking=True)
