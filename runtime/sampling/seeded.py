"""Counter-based random numbers for seeded requests: a pure function of (seed, step, token id).

A stateful generator would make a request's draws depend on which rows shared its batch and on
the device; hashing the counter instead gives every (seed, step, token) its own uniform, the same
on the CPU and on CUDA.

All arithmetic is on int64 tensors holding 32-bit values. torch's int64 multiply has no defined
wrap-around, so `_mul32` never lets a product overflow: a 32-bit constant c >= 2**31 is used as
c - 2**32 (the same value mod 2**32), so |x * c| < 2**32 * 2**31 = 2**63, and masking the exact
(possibly negative, two's complement) product gives (x * c) mod 2**32.

    seed (64 bit) --> seed_lo, seed_hi --+
                                         +--> row key k     (per row, [B]; several rounds)
    step ---------------------------------+
    token t --> s_t = mix(t * golden)                       (per token, [V])
    bits[b, t] = mix(k[b] ^ s_t)                            ([B, V]; one round: the hot part)

For one row, t -> bits is a bijection of distinct inputs, so no two tokens share a value; for
two rows, values coincide about as often as for independent random draws (V**2 / 2**32 pairs).
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


def _signed32(c: int) -> int:
    return c - (1 << 32) if c >= 1 << 31 else c


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) and a 32-bit constant c, with no int64 overflow."""
    return (x * _signed32(c)) & MASK32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit finalizer (xor-shift / multiply, the lowbias32 constants).

    The first op makes a new tensor; the rest work in place on it (fewer [B, V] allocations).
    """
    x = x ^ (x >> 16)
    x.mul_(_signed32(0x7FEB352D)).bitwise_and_(MASK32)
    x ^= x >> 15
    x.mul_(_signed32(0x846CA68B)).bitwise_and_(MASK32)
    x ^= x >> 16
    return x


def _row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    seed_lo = seeds & MASK32
    seed_hi = (seeds >> 32) & MASK32  # >> is arithmetic on negative int64; the mask undoes it
    step = steps & MASK32
    return _mix(_mix(_mix(seed_lo ^ _GOLDEN32) ^ seed_hi) ^ step)


def random_bits(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B] seeds, [B] steps -> [B, V] int64 values in [0, 2**32)."""
    keys = _row_keys(seeds.long(), steps.long())
    token = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    token_salt = _mix(_mul32(token, _GOLDEN32))
    return _mix(keys.unsqueeze(1) ^ token_salt.unsqueeze(0))


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> float32 uniforms strictly inside (0, 1)."""
    odd = (bits >> (32 - _UNIFORM_BITS)).mul_(2).add_(1)
    return odd.float().mul_(2.0 ** -(_UNIFORM_BITS + 1))


def seeded_exponentials(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, V] float32 Exp(1) samples, each a pure function of (seed, step, token id)."""
    return bits_to_uniform(random_bits(seeds, steps, vocab_size)).log_().neg_()
