"""Rotary position embedding (neox / rotate-half layout, as HF Llama and Qwen use).

A cos/sin table is precomputed for every position up to the context length; a forward pass only
gathers rows by position, so ragged batches at arbitrary positions cost one index_select.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .....kernels import fused
from ...model_config import RopeConfig


def inverse_frequencies(rope: RopeConfig, rotary_dim: int) -> torch.Tensor:
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim
    inv_freq = 1.0 / (rope.theta**exponents)
    if rope.rope_type == "linear":
        inv_freq = inv_freq / rope.factor
    elif rope.rope_type == "llama3":
        inv_freq = _llama3_scale(inv_freq, rope)
    return inv_freq.float()


def _llama3_scale(inv_freq: torch.Tensor, rope: RopeConfig) -> torch.Tensor:
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between is
    # interpolated smoothly.
    low_wavelen = rope.original_max_position / rope.low_freq_factor
    high_wavelen = rope.original_max_position / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (rope.original_max_position / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    cos_table: torch.Tensor  # buffers, registered in __init__
    sin_table: torch.Tensor

    def __init__(self, head_dim: int, max_positions: int, rope: RopeConfig) -> None:
        super().__init__()
        self.head_dim = head_dim
        half = head_dim // 2
        self.fused_ok = head_dim % 2 == 0 and half & (half - 1) == 0  # Triton's arange: 2**n
        inv_freq = inverse_frequencies(rope, head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        # [max_positions, head_dim]: cos and sin duplicated over both halves.
        self.register_buffer("cos_table", torch.cat([angles.cos()] * 2, dim=-1), persistent=False)
        self.register_buffer("sin_table", torch.cat([angles.sin()] * 2, dim=-1), persistent=False)
        # (positions, cos, signed sin) of the last CPU-path call: see `_cos_sin`.
        self._cached_cos_sin: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: [T, H, D], k: [T, Hkv, D], positions: [T] -> rotated (q, k) in q's dtype."""
        if fused.available(q) and self.fused_ok:
            return fused.rotary(positions, q, k, self.cos_table, self.sin_table)
        cos, signed_sin = self._cos_sin(positions)
        qk = _adjacent_heads(q, k)
        if qk is not None:  # q and k side by side in one qkv row: one pass over both
            rotated = _rotate(qk, cos, signed_sin)
            return rotated[:, : q.shape[1]], rotated[:, q.shape[1] :]
        return _rotate(q, cos, signed_sin), _rotate(k, cos, signed_sin)

    def _cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, 1, D] cos and signed sin (first half negated, see `_rotate`) at `positions`.

        Every layer rotates at the same positions, so the gathered rows of the last call are
        kept and reused while the positions are equal (a [T] compare is cheaper than the two
        gathers and the negation: ~60 small ops a step fewer on a 30-layer CPU model)."""
        # CPU only: on a GPU the compare would wait for the device, and cannot run while a CUDA
        # graph is being captured, so there the rows are gathered on every call.
        on_cpu = positions.device.type == "cpu"
        cached = self._cached_cos_sin
        if on_cpu and cached is not None and _same_values(cached[0], positions):
            return cached[1], cached[2]
        half = self.head_dim // 2
        cos = self.cos_table.index_select(0, positions).unsqueeze(1)
        signed_sin = self.sin_table.index_select(0, positions).unsqueeze(1)
        signed_sin[..., :half].neg_()
        if on_cpu:
            self._cached_cos_sin = (positions.clone(), cos, signed_sin)
        return cos, signed_sin

    def stores_fused(self, x: torch.Tensor, k_cache: torch.Tensor) -> bool:
        """Whether a fused kernel may rotate activations like `x` and store them into this
        cache: on the GPU, a head size the kernels take, the cache in the activations' dtype."""
        return fused.available(x) and self.fused_ok and k_cache.dtype == x.dtype

    def rotate_into_cache(
        self,
        positions: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        slots: torch.Tensor,
    ) -> torch.Tensor | None:
        """On the GPU, in one fused launch: the rotated q, with the rotated k and v already
        written into the caches at `slots`. None where that kernel does not apply (the CPU,
        fused kernels off, a KV cache in another dtype): the caller rotates and stores apart."""
        if not self.stores_fused(q, k_cache):
            return None
        cos, sin = self.cos_table, self.sin_table
        return fused.rotary_and_store(positions, q, k, v, cos, sin, k_cache, v_cache, slots)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half: x * cos + [-x2, x1] * sin, computed as x * cos + [x2, x1] * signed_sin with
    signed_sin = [-sin1, sin2]. (-a) * b and a * (-b) are the same float, so the result is bit
    for bit that of the textbook form, with one op (the negation of x2) fewer per call."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    swapped = torch.cat([x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos).add_(swapped.mul_(signed_sin)).to(x.dtype)


def _adjacent_heads(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
    """q [T, H, D] and k [T, Hkv, D] as one [T, H + Hkv, D] view where k's heads follow q's in
    the same rows (the split of a fused qkv projection), else None.

        row t:  | q head 0 .. H-1 | k head 0 .. Hkv-1 | v ... |   one stride between rows
    """
    if q.dim() != 3 or q.dtype != k.dtype or q.shape[0] != k.shape[0]:
        return None
    heads, head_dim = q.shape[1], q.shape[2]
    stride = q.stride()
    if stride[1:] != (head_dim, 1) or k.stride() != stride or k.shape[2] != head_dim:
        return None
    # k starts where q's last head ends, in the same allocation (so on the same device).
    if k.data_ptr() != q.data_ptr() + heads * head_dim * q.element_size():
        return None
    if q.untyped_storage().data_ptr() != k.untyped_storage().data_ptr():
        return None
    return q.as_strided((q.shape[0], heads + k.shape[1], head_dim), stride)


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.device == b.device and a.dtype == b.dtype and torch.equal(a, b)
