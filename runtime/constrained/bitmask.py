"""Allowed-token bitmasks: one bit per vocabulary entry, 32 entries per int32 word.

This is llguidance's (and xgrammar's) layout: bit b of word w allows token 32 * w + b. Applying a
mask is a handful of tensor ops on the logits' device, so it needs no compiled kernel.
"""

from __future__ import annotations

import torch

_BITS = 32


def bitmask_words(vocab_size: int) -> int:
    return -(-vocab_size // _BITS)


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Returns logits [B, V] with every token whose bit is 0 in `bitmask` [B, W] set to -inf.

    Tokens past 32 * W (a model vocabulary padded beyond the tokenizer's) are disallowed too.
    """
    rows, vocab_size = logits.shape
    if bitmask.shape[0] != rows:
        raise ValueError(f"bitmask has {bitmask.shape[0]} rows for {rows} rows of logits")
    shifts = torch.arange(_BITS, device=bitmask.device, dtype=torch.int32)
    # [B, W, 32] -> [B, 32 W]; an arithmetic shift of a negative word is fine: only bit 0 counts.
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().view(rows, -1)
    covered = min(allowed.shape[1], vocab_size)
    keep = torch.zeros(rows, vocab_size, dtype=torch.bool, device=logits.device)
    keep[:, :covered] = allowed[:, :covered].to(logits.device)
    return logits.masked_fill(~keep, float("-inf"))
