"""Counter-based uniforms for seeded requests: a pure function of (seed, step).

A stateful generator would make a request's draws depend on which rows shared its batch and on
the device; hashing the counter instead gives each (seed, step) its own uniform, the same on the
CPU and on CUDA. The sampler draws a token by inverse CDF, so one uniform per row is all it
needs and the hash costs O(B), not O(B * V).

All arithmetic is on int64 tensors holding 32-bit values. torch's int64 multiply has no defined
wrap-around, so `_mul32` never lets a product overflow: a 32-bit constant c >= 2**31 is used as
c - 2**32 (the same value mod 2**32), so |x * c| < 2**32 * 2**31 = 2**63, and masking the exact
(possibly negative, two's complement) product gives (x * c) mod 2**32.

    seed (64 bit) -> seed_lo, seed_hi --+
                                        +-> key = mix(mix(mix(seed_lo ^ c) ^ seed_hi) ^ step)
    step -------------------------------+
    word1 = mix(key ^ c1), word2 = mix(key ^ c2)      two 32-bit words per row
    u = (word1 << 8 | word2 >> 24) / 2**40            40 random bits, u in [0, 1 - 2**-40]
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
_GOLDEN32 = 0x9E3779B9  # odd: multiplying by it permutes 32-bit values
_WORD1_SALT = 0x85EBCA6B
_WORD2_SALT = 0xC2B2AE35
# 40 bits resolve probabilities far below anything a float32 softmax produces, and keep
# u * total < total in float64 (u = 1 - 2**-53 could round u * total up to total).
UNIFORM_BITS = 40


def seed_to_int64(seed: int) -> int:
    """Any Python int -> the signed int64 holding its low 64 bits (what a torch tensor can hold)."""
    seed &= MASK64
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def _signed32(c: int) -> int:
    return c - (1 << 32) if c >= 1 << 31 else c


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) and a 32-bit constant c, with no int64 overflow."""
    return (x * _signed32(c)) & MASK32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit finalizer (xor-shift / multiply, the lowbias32 constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def random_words(seeds: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] int64 seeds and steps -> two [B] int64 tensors of 32-bit hash words."""
    seeds, steps = seeds.long(), steps.long()
    seed_lo = seeds & MASK32
    seed_hi = (seeds >> 32) & MASK32  # >> is arithmetic on negative int64; the mask undoes it
    key = _mix(_mix(_mix(seed_lo ^ _GOLDEN32) ^ seed_hi) ^ (steps & MASK32))
    return _mix(key ^ _WORD1_SALT), _mix(key ^ _WORD2_SALT)


def seeded_uniforms(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """[B] float64 uniforms in [0, 1 - 2**-40], each a pure function of its (seed, step)."""
    word1, word2 = random_words(seeds, steps)
    low_bits = UNIFORM_BITS - 32
    bits = (word1 << low_bits) | (word2 >> (32 - low_bits))  # < 2**40: exact in float64
    return bits.double() * 2.0**-UNIFORM_BITS
