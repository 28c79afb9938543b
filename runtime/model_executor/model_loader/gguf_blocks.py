"""The quantized blocks of a Llama-family GGUF, for the CPU's products (kernels/cpu/quantized.py).

The model's float32 weights come from transformers' dequantization of the same file (weights.py);
these are the blocks they came from, rearranged as the model holds its weights: q/k rows back in
HF's rotary order (llama.cpp's converter interleaves them; transformers undoes it), q/k/v stacked
into qkv_proj and gate/up into gate_up_proj. Each is kept only where it dequantizes to the loaded
float32 weight bit for bit, so a product over blocks equals the float32 one and greedy outputs
cannot change; anything else (another block type, a layout this code does not know) keeps the
float32 weight.
"""

from __future__ import annotations

import logging
import mmap
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFValueType

from ....kernels.cpu.quantized import (
    BLOCK,
    GGUF_BLOCK_BYTES,
    Kind,
    QuantizedWeight,
    concat_rows,
    from_gguf_blocks,
)
from ....kernels.cpu.small_gemm import SmallGemm

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

# The block kinds the products take, by ggml's type number.
_KINDS: dict[int, Kind] = {GGMLQuantizationType.Q4_1: "q4_1", GGMLQuantizationType.Q8_0: "q8_0"}
# Bytes of GGUF's scalar metadata types (strings and arrays have their own layouts).
_V = GGUFValueType
_SCALAR_BYTES: dict[int, int] = {
    _V.UINT8: 1, _V.INT8: 1, _V.UINT16: 2, _V.INT16: 2, _V.UINT32: 4, _V.INT32: 4,
    _V.FLOAT32: 4, _V.BOOL: 1, _V.UINT64: 8, _V.INT64: 8, _V.FLOAT64: 8,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _TensorInfo:
    ggml_type: int
    dims: tuple[int, ...]  # fastest first, as GGUF lists them
    offset: int  # from the start of the data section


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.take("Q")
        self.pos += size
        return bytes(self.data[self.pos - size : self.pos]).decode("utf-8", "replace")

    def skip_value(self, kind: int) -> None:
        if kind == GGUFValueType.STRING:
            size = self.take("Q")  # read before adding: `pos += take()` loses take's advance
            self.pos += size
        elif kind == GGUFValueType.ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALAR_BYTES:
                self.pos += count * _SCALAR_BYTES[item]  # count is read: no lost advance
            else:
                for _ in range(count):
                    self.skip_value(item)
        else:
            self.pos += _SCALAR_BYTES[kind]


def _tensor_table(data: mmap.mmap) -> tuple[dict[str, _TensorInfo], int, str]:
    """Each tensor's type, shape and offset, where the data section starts, and the model's
    architecture ("general.architecture"), from GGUF's header read directly (gguf-py's reader
    also decodes all metadata: 8 s for the 49k-entry vocabulary on the development machine,
    where this takes a fraction of a second)."""
    cursor = _Cursor(data)
    if bytes(data[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    cursor.pos = 4
    version, tensors, fields = cursor.take("I"), cursor.take("Q"), cursor.take("Q")
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported")
    alignment, architecture = 32, ""
    for _ in range(fields):
        key, kind = cursor.string(), cursor.take("I")
        if key == "general.alignment" and kind == GGUFValueType.UINT32:
            alignment = cursor.take("I")
        elif key == "general.architecture" and kind == GGUFValueType.STRING:
            architecture = cursor.string()
        else:
            cursor.skip_value(kind)
    table = {}
    for _ in range(tensors):
        name = cursor.string()
        dims = tuple(cursor.take("Q") for _ in range(cursor.take("I")))
        ggml_type, offset = cursor.take("I"), cursor.take("Q")
        table[name] = _TensorInfo(ggml_type, dims, offset)
    return table, -(-cursor.pos // alignment) * alignment, architecture


def read_llama_blocks(
    path: str, num_layers: int, num_heads: int, num_kv_heads: int
) -> dict[str, QuantizedWeight]:
    """Parameter name (the model's, e.g. "layers.0.self_attn.qkv_proj.weight") -> its blocks,
    for every linear weight and the LM head whose GGUF tensors are of a kind the products take."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            return _llama_blocks(data, num_layers, num_heads, num_kv_heads)
        except (struct.error, KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"unreadable GGUF header in {path!r}: {exc!r}") from exc


def _llama_blocks(
    data: mmap.mmap, num_layers: int, num_heads: int, num_kv_heads: int
) -> dict[str, QuantizedWeight]:
    tensors, start, architecture = _tensor_table(data)
    # transformers undoes llama.cpp's q/k interleaving for the "llama" architecture only.
    interleaved = architecture == "llama"

    def blocks(name: str) -> QuantizedWeight | None:
        info = tensors.get(name)
        if info is None or info.ggml_type not in _KINDS or len(info.dims) != 2:
            return None
        kind = _KINDS[info.ggml_type]
        cols, rows = info.dims
        size = rows * (cols // BLOCK) * GGUF_BLOCK_BYTES[kind]
        raw = np.frombuffer(data, np.uint8, count=size, offset=start + info.offset)
        return from_gguf_blocks(kind, raw, (rows, cols))

    found: dict[str, QuantizedWeight] = {}

    def stack(name: str, parts: list[QuantizedWeight | None]) -> None:
        present = [p for p in parts if p is not None]
        if len(present) == len(parts) and len({(p.kind, p.shape[1]) for p in present}) == 1:
            found[name] = concat_rows(present)

    for layer in range(num_layers):
        prefix, to = f"blk.{layer}.", f"layers.{layer}."
        q, k = blocks(prefix + "attn_q.weight"), blocks(prefix + "attn_k.weight")
        if interleaved:
            q = q and q.take_rows(_hf_rotary_order(q.shape[0], num_heads))
            k = k and k.take_rows(_hf_rotary_order(k.shape[0], num_kv_heads))
        stack(to + "self_attn.qkv_proj.weight", [q, k, blocks(prefix + "attn_v.weight")])
        stack(to + "self_attn.o_proj.weight", [blocks(prefix + "attn_output.weight")])
        gate, up = blocks(prefix + "ffn_gate.weight"), blocks(prefix + "ffn_up.weight")
        stack(to + "mlp.gate_up_proj.weight", [gate, up])
        stack(to + "mlp.down_proj.weight", [blocks(prefix + "ffn_down.weight")])
    head = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    stack("lm_head.weight", [blocks(head)])
    return found


def _hf_rotary_order(rows: int, heads: int) -> torch.Tensor:
    """For each row of HF's q (or k) weight, the GGUF row it is: transformers' undoing of
    llama.cpp's interleaving (each head's rows as [2, half] -> [half, 2]), applied to indices."""
    order = np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(2, 1).reshape(rows)
    return torch.from_numpy(order.copy())


def verified_blocks(
    kernel: SmallGemm, model: nn.Module, found: dict[str, QuantizedWeight]
) -> dict[str, QuantizedWeight]:
    """The blocks of `found` that dequantize (by the products' own code) to the model's loaded
    float32 parameter of that name bit for bit; the rest are logged and dropped."""
    params = dict(model.named_parameters(remove_duplicate=False))
    kept: dict[str, QuantizedWeight] = {}
    for name, blocks in found.items():
        param = params.get(name)
        if param is None or param.dtype != torch.float32 or tuple(param.shape) != blocks.shape:
            logger.info("GGUF blocks for %s do not fit the model's weight: float32 kept", name)
            continue
        if not torch.equal(kernel.dequantize(blocks), param.data):
            logger.warning("GGUF blocks for %s differ from the loaded weight: float32 kept", name)
            continue
        kept[name] = blocks
    return kept
