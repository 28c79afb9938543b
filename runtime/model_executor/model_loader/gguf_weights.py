"""A GGUF's float32 weights as transformers' `load_gguf_checkpoint` gives them, read faster.

transformers reads a GGUF through gguf-py's reader, which decodes every metadata value first
(the embedded model's 49k-entry vocabulary: 8-12 s on the development machine), and maps tensor
names by building gguf-py's name table once per module of the model (397 times for SmolLM2, 22
ms each). Together that was most of a server's start-up. For the architectures radixserve runs
(Llama, Qwen2, Qwen3) this does the same steps once each: the tensor table from the header
(gguf_file.py), one name table, gguf-py's own `dequantize`, and transformers' q/k reordering for
"llama" files. The tensors are equal to transformers' bit for bit (tested); for any other
architecture, tensor type or a header this cannot read, `plan` returns None and weights.py uses
transformers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, MODEL_ARCH_NAMES, GGMLQuantizationType, get_tensor_name_map
from gguf.quants import dequantize
from torch import nn

from .gguf_file import GGUFHeader, open_gguf, tensor_array

logger = logging.getLogger(__name__)

# GGUF architecture -> whether transformers reorders its q/k rows (its LlamaTensorProcessor);
# the others go through its plain TensorProcessor.
ARCHITECTURES: dict[str, bool] = {"llama": True, "qwen2": False, "qwen3": False}


@dataclass(frozen=True, slots=True)
class GGUFTensors:
    """The tensors of one GGUF file to read, with the HF parameter name each one loads."""

    data: np.ndarray  # the mapped file
    header: GGUFHeader
    hf_names: dict[str, str]  # GGUF tensor name -> HF parameter name
    heads: tuple[int, int] | None  # (query, key/value) heads when q/k rows are reordered

    def __len__(self) -> int:
        return sum(name in self.hf_names for name in self.header.tensors)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for info in self.header.tensors.values():  # in file order, as transformers reads them
            hf_name = self.hf_names.get(info.name)
            if hf_name is None:
                continue
            qtype = GGMLQuantizationType(info.ggml_type)
            weights = dequantize(tensor_array(self.data, info), qtype)
            if self.heads is not None and (".attn_q." in info.name or ".attn_k." in info.name):
                query, kv = self.heads
                weights = undo_qk_interleave(weights, query if ".attn_q." in info.name else kv)
            yield hf_name, torch.from_numpy(np.copy(weights))


def plan(path: str, skeleton: nn.Module, hf_config: Any) -> GGUFTensors | None:
    """The file's tensors to read this way, or None where transformers must read them."""
    try:
        data, header = open_gguf(path)
    except ValueError as exc:
        logger.info("GGUF read by transformers: %s", exc)
        return None
    architecture = header.architecture
    if architecture not in ARCHITECTURES or hf_config.model_type != architecture:
        return None
    if not all(_readable(info.ggml_type) for info in header.tensors.values()):
        return None
    heads = None
    if reorders_qk(header):
        heads = (hf_config.num_attention_heads, hf_config.num_key_value_heads)
    hf_names = gguf_to_hf_names(skeleton, architecture, hf_config.num_hidden_layers)
    return GGUFTensors(data, header, hf_names, heads)


def reorders_qk(header: GGUFHeader) -> bool:
    """Whether transformers undoes llama.cpp's q/k row interleaving in this file's weights: for
    the "llama" architecture, and only when the file states both head counts (its processor
    reads them from the file's metadata, not from the config's defaults)."""
    arch = header.architecture
    counts = {f"{arch}.attention.head_count", f"{arch}.attention.head_count_kv"}
    return ARCHITECTURES.get(arch, False) and counts <= header.keys


def gguf_to_hf_names(skeleton: nn.Module, architecture: str, num_layers: int) -> dict[str, str]:
    """transformers' `get_gguf_hf_weights_map` with one name table: it maps the state dict's
    names of the model and then of each submodule (relative to it), depth first, the first
    mapping of a GGUF name winning over later ones, and within one module the last."""
    arch = next(key for key, name in MODEL_ARCH_NAMES.items() if name == architecture)
    table = get_tensor_name_map(arch, num_layers)
    keys = list(skeleton.state_dict())
    names: dict[str, str] = {}
    for module_name, _ in skeleton.named_modules():
        prefix = f"{module_name}." if module_name else ""
        own: dict[str, str] = {}
        for key in keys:
            if not key.startswith(prefix):
                continue
            name, suffix = key[len(prefix) :], ""
            if name.endswith((".weight", ".bias")):
                name, _, last = name.rpartition(".")
                suffix = "." + last
            gguf_name = table.get_name(name)
            if gguf_name is not None:
                own[gguf_name + suffix] = key
        for gguf_name, key in own.items():
            names.setdefault(gguf_name, key)
    return names


@functools.cache
def _readable(ggml_type: int) -> bool:
    """Whether gguf-py's `dequantize` takes this type (probed on one zero block)."""
    try:
        qtype = GGMLQuantizationType(ggml_type)
        dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
    except (ValueError, KeyError, NotImplementedError):
        return False
    return True


def undo_qk_interleave(weights: np.ndarray, heads: int) -> np.ndarray:
    """transformers' reversal of llama.cpp's q/k row interleaving: each head's rows as
    [2, half] -> [half, 2] (rows first; on a vector of row numbers, which GGUF row each HF row
    is)."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)
