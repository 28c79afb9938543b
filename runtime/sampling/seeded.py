"""Counter-based random numbers for seeded requests: a pure function of (seed, step, token id).

A stateful generator would make a request's draws depend on which rows shared its batch and on
the device; hashing the counter instead gives every (seed, step, token) its own uniform, the same
on the CPU and on CUDA.

All arithmetic is on int64 tensors holding 32-bit values. torch's int64 multiply has no defined
wrap-around, so `_mul32` splits the multiplier into 16-bit halves: every partial product stays
below 2**48 and the result is exactly (x * c) mod 2**32.

    seed (64 bit) --> seed_lo, seed_hi --+
                                         +--> row key k1, k2   (per row, [B])
    step ---------------------------------+
    token t --> s_t = mix(t * golden)                             (per token, [V])
    bits[b, t] = mix(mix(k1[b] ^ s_t) ^ k2[b])                    ([B, V])

The second round keys in a different row value, so two rows whose first-round inputs collide
(k1 ^ s_t == k1' ^ s_t') still get unrelated outputs.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
_GOLDEN32 = 0x9E3779B9  # odd: multiplying by it permutes 32-bit values
# Uniforms keep 23 random bits: (2k + 1) / 2**24 for k < 2**23 is exact in float32 and lies in
# [2**-24, 1 - 2**-24], so -log(u) is finite and never zero (a zero would let a token with any
# probability, even a filtered one, win the exponential race).
_UNIFORM_BITS = 23


def seed_to_int64(seed: int) -> int:
    """Any Python int -> the signed int64 holding its low 64 bits (what a torch tensor can hold)."""
    seed &= MASK64
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    lo = x * (c & 0xFFFF)
    hi = (x * (c >> 16)) & 0xFFFF  # only its low 16 bits survive the shift below, mod 2**32
    return (lo + (hi << 16)) & MASK32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit finalizer (xor-shift / multiply, the lowbias32 constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    seed_lo = seeds & MASK32
    seed_hi = (seeds >> 32) & MASK32  # >> is arithmetic on negative int64; the mask undoes it
    step = steps & MASK32
    k1 = _mix(_mix(_mix(seed_lo ^ _GOLDEN32) ^ seed_hi) ^ step)
    k2 = _mix(k1 ^ _mul32(step + 1, _GOLDEN32) ^ seed_hi)
    return k1, k2


def random_bits(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B] seeds, [B] steps -> [B, V] int64 values in [0, 2**32)."""
    k1, k2 = _row_keys(seeds.long(), steps.long())
    token = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    token_salt = _mix(_mul32(token, _GOLDEN32))
    return _mix(_mix(k1.unsqueeze(1) ^ token_salt.unsqueeze(0)) ^ k2.unsqueeze(1))


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> float32 uniforms strictly inside (0, 1)."""
    top = bits >> (32 - _UNIFORM_BITS)
    return (top * 2 + 1).float() * 2.0 ** -(_UNIFORM_BITS + 1)


def seeded_exponentials(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, V] float32 Exp(1) samples, each a pure function of (seed, step, token id)."""
    return -torch.log(bits_to_uniform(random_bits(seeds, steps, vocab_size)))
