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
from typing import TYPE_CHECKING

import numpy as np
import torch
from gguf import GGMLQuantizationType

from ....kernels.cpu.quantized import Kind, QuantizedWeight, concat_rows, from_gguf_blocks
from ....kernels.cpu.small_gemm import SmallGemm
from .gguf_file import open_gguf, tensor_array
from .gguf_weights import reorders_qk, undo_qk_interleave

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

# The block kinds the products take, by ggml's type number.
_KINDS: dict[int, Kind] = {GGMLQuantizationType.Q4_1: "q4_1", GGMLQuantizationType.Q8_0: "q8_0"}


def read_llama_blocks(
    path: str, num_layers: int, num_heads: int, num_kv_heads: int
) -> dict[str, QuantizedWeight]:
    """Parameter name (the model's, e.g. "layers.0.self_attn.qkv_proj.weight") -> its blocks,
    for every linear weight and the LM head whose GGUF tensors are of a kind the products take."""
    data, header = open_gguf(path)
    tensors = header.tensors
    interleaved = reorders_qk(header)  # as the loaded float32 weights are

    def blocks(name: str) -> QuantizedWeight | None:
        info = tensors.get(name)
        if info is None or info.ggml_type not in _KINDS or len(info.dims) != 2:
            return None
        cols, rows = info.dims
        return from_gguf_blocks(_KINDS[info.ggml_type], tensor_array(data, info), (rows, cols))

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
    """For each row of HF's q (or k) weight, the GGUF row it is."""
    return torch.from_numpy(undo_qk_interleave(np.arange(rows), heads).copy())


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
