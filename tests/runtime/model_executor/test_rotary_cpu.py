"""RotaryEmbedding's torch path (the CPU): q and k rotated in one pass when they sit side by
side in a qkv row, cos/sin reused across layers at equal positions, bit for bit the textbook
rotate-half."""

from __future__ import annotations

import torch

from radixserve.runtime.model_executor.model_config import RopeConfig
from radixserve.runtime.model_executor.models.layers.rotary import RotaryEmbedding

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64


def textbook(rotary: RotaryEmbedding, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x * cos + [-x2, x1] * sin, as HF Llama writes it."""
    cos = rotary.cos_table[positions].unsqueeze(1)
    sin = rotary.sin_table[positions].unsqueeze(1)
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def qkv_views(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q [rows, H, D] and k [rows, Hkv, D] split from one fused qkv projection's output."""
    qkv = torch.randn(
        rows, (HEADS + 2 * KV_HEADS) * HEAD_DIM, generator=torch.Generator().manual_seed(seed)
    )
    q, k, _ = qkv.split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
    return q.view(rows, HEADS, HEAD_DIM), k.view(rows, KV_HEADS, HEAD_DIM)


def test_qkv_views_and_separate_tensors_match_the_textbook_bit_for_bit() -> None:
    rotary = RotaryEmbedding(HEAD_DIM, 4096, RopeConfig(theta=10000.0))
    positions = torch.tensor([0, 7, 3, 4095, 100])
    q, k = qkv_views(5, seed=0)
    q_joint, k_joint = rotary(positions, q, k)  # one pass over the adjacent heads
    q_apart, k_apart = rotary(positions, q.contiguous(), k.contiguous())  # two passes
    assert q_joint.shape == q.shape and k_joint.shape == k.shape
    for got in (q_joint, q_apart):
        assert torch.equal(got, textbook(rotary, positions, q))
    for got in (k_joint, k_apart):
        assert torch.equal(got, textbook(rotary, positions, k))


def test_cached_cos_sin_follow_the_positions() -> None:
    # Equal positions reuse the last gather; new values, even written into the same tensor in
    # place, gather again.
    rotary = RotaryEmbedding(HEAD_DIM, 512, RopeConfig(theta=10000.0))
    q, k = qkv_views(3, seed=1)
    positions = torch.tensor([1, 2, 3])
    first, _ = rotary(positions, q, k)
    again, _ = rotary(positions.clone(), q, k)
    assert torch.equal(first, again)
    positions.copy_(torch.tensor([9, 400, 0]))
    moved, moved_k = rotary(positions, q, k)
    assert torch.equal(moved, textbook(rotary, positions, q))
    assert torch.equal(moved_k, textbook(rotary, positions, k))
    fewer = torch.tensor([5])
    q1, k1 = rotary(fewer, q[:1], k[:1])
    assert torch.equal(q1, textbook(rotary, fewer, q[:1]))
    assert torch.equal(k1, textbook(rotary, fewer, k[:1]))
