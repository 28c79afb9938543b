"""GGUF-quantized weights held as blocks for the CPU's small-batch products (native/quant_gemm.c).

A decode step on the CPU reads every weight once, so its time is the weights' bytes over memory
bandwidth. The embedded SmolLM2 GGUF stores its linear layers as Q4_1 and its embedding (the
tied LM head) as Q8_0; the model computes over their float32 dequantization. Kept as blocks
(0.75 and 1.125 bytes a weight against float32's 4) and dequantized in registers exactly as
gguf-py dequantizes them, the products read 3.5-5x fewer bytes and equal the float32 products bit
for bit (the same values, multiplied and summed in the same order).

The GGUF block layouts (ggml's), 32 weights along a row each:
    Q4_1: float16 d, float16 m, 16 bytes of codes (element i in the low nibble of byte i for
          i < 16, in the high nibble of byte i - 16 otherwise); w = d * q + m
    Q8_0: float16 d, 32 signed bytes q; w = d * q
`QuantizedWeight` splits them into codes [N, code bytes a row] and float32 scales [N, blocks a
row, per block], the layout native/small_gemm.h documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

BLOCK = 32
Kind = Literal["q4_1", "q8_0"]
KIND_CODES = {"q4_1": 1, "q8_0": 2}  # small_gemm.h's rs_weight_kind
# Per block: bytes in the GGUF, bytes of codes, float32 scales.
GGUF_BLOCK_BYTES = {"q4_1": 20, "q8_0": 34}
_CODE_BYTES = {"q4_1": 16, "q8_0": 32}
_SCALES = {"q4_1": 2, "q8_0": 1}


@dataclass(frozen=True, slots=True)
class QuantizedWeight:
    """W [rows, cols] as GGUF blocks: `codes` [rows, cols / 32 * code bytes] (uint8 for Q4_1,
    int8 for Q8_0) and `scales` [rows, cols / 32, 1 or 2] float32, both contiguous."""

    kind: Kind
    codes: torch.Tensor
    scales: torch.Tensor
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        rows, cols = self.shape
        if cols % BLOCK or rows < 1:
            raise ValueError(f"{self.kind} weight of shape {self.shape}: columns not whole blocks")
        blocks = cols // BLOCK
        codes_shape = (rows, blocks * _CODE_BYTES[self.kind])
        scales_shape = (rows, blocks, _SCALES[self.kind])
        code_dtype = torch.uint8 if self.kind == "q4_1" else torch.int8
        if tuple(self.codes.shape) != codes_shape or self.codes.dtype != code_dtype:
            raise ValueError(f"{self.kind} codes {tuple(self.codes.shape)}, {codes_shape} expected")
        if tuple(self.scales.shape) != scales_shape or self.scales.dtype != torch.float32:
            raise ValueError(
                f"{self.kind} scales {tuple(self.scales.shape)}, {scales_shape} expected"
            )
        for tensor in (self.codes, self.scales):
            if not tensor.is_contiguous() or tensor.device.type != "cpu":
                raise ValueError("quantized weights are contiguous CPU tensors")

    @property
    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size() + self.scales.numel() * 4

    def take_rows(self, order: torch.Tensor) -> QuantizedWeight:
        """The weight with rows in `order` (a block never spans rows, so rows move whole)."""
        return QuantizedWeight(
            self.kind,
            self.codes[order].contiguous(),
            self.scales[order].contiguous(),
            (len(order), self.shape[1]),
        )


def concat_rows(parts: list[QuantizedWeight]) -> QuantizedWeight:
    """The row-wise concatenation of weights of one kind and width (a fused q/k/v or gate/up)."""
    kinds, widths = {p.kind for p in parts}, {p.shape[1] for p in parts}
    if len(kinds) != 1 or len(widths) != 1:
        raise ValueError(f"cannot stack {sorted(kinds)} weights of widths {sorted(widths)}")
    return QuantizedWeight(
        parts[0].kind,
        torch.cat([p.codes for p in parts]).contiguous(),
        torch.cat([p.scales for p in parts]).contiguous(),
        (sum(p.shape[0] for p in parts), parts[0].shape[1]),
    )


def from_gguf_blocks(kind: Kind, raw: np.ndarray, shape: tuple[int, int]) -> QuantizedWeight:
    """A weight from its GGUF bytes `raw` (rows x blocks of `kind`, as the file stores them)."""
    rows, cols = shape
    if cols % BLOCK:
        raise ValueError(f"{kind} tensor of shape {shape}: columns not whole blocks")
    blocks = cols // BLOCK
    data = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, blocks, GGUF_BLOCK_BYTES[kind])
    halves = _SCALES[kind]
    scales = data[..., : 2 * halves].copy().view(np.float16).astype(np.float32)
    codes = data[..., 2 * halves :].reshape(rows, blocks * _CODE_BYTES[kind])
    if kind == "q8_0":
        codes = codes.view(np.int8)
    return QuantizedWeight(
        kind,
        torch.from_numpy(np.ascontiguousarray(codes)),
        torch.from_numpy(scales.reshape(rows, blocks, halves)),
        shape,
    )


def reference_dequantize(weight: QuantizedWeight) -> torch.Tensor:
    """W in float32 by gguf-py's arithmetic (d * q rounded, then + m), in torch: the oracle the
    compiled dequantization is checked against in tests."""
    rows, cols = weight.shape
    blocks = cols // BLOCK
    if weight.kind == "q4_1":
        packed = weight.codes.reshape(rows, blocks, 16)
        q = torch.cat([packed & 15, packed >> 4], dim=-1).float()
        d, m = weight.scales[..., 0:1], weight.scales[..., 1:2]
        return (d * q + m).reshape(rows, cols)
    q = weight.codes.reshape(rows, blocks, BLOCK).float()
    return (weight.scales * q).reshape(rows, cols)
