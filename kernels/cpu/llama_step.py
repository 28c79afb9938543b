"""A Llama-family forward step on the CPU in one call into C (native/llama_step.c).

At batch 1 a SmolLM2-135M step spent about 15 of its 42 ms outside the matrix products: some 25
torch ops a layer (norms, rotary, the KV store, gathers, SDPA, SiLU, residual adds), each a few
microseconds of dispatch for a few hundred floats of work, plus the Python between them. The C
step runs all of that for every layer, calling the products (small_gemm.c) directly; the model
uses it for batches of up to MAX_ROWS new tokens, decode rows and prefill chunks alike
(runtime/model_executor/models/cpu_step.py). A prefill chunk's rows go through the attention 16
at a time, queries in vector lanes (native/lane_attention.c), which outran torch's SDPA at every
prompt length measured (docs/cpu_profile.md section 14).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from .lane_attention import MAX_HEAD_DIM
from .quantized import QuantizedWeight
from .small_gemm import WeightRef, small_gemm

_P = ctypes.c_void_p
# Batches of up to this many new tokens: the step's buffers take about 29 KB a row for
# SmolLM2-135M (240 MB at this many), and the CPU's chunked prefill takes 2,048 a step by default.
MAX_ROWS = 8192


class _Layer(ctypes.Structure):
    _fields_ = [
        ("input_norm", _P),
        ("post_norm", _P),
        ("qkv", WeightRef),
        ("qkv_b", _P),
        ("o", WeightRef),
        ("gate_up", WeightRef),
        ("down", WeightRef),
        ("k_cache", _P),
        ("v_cache", _P),
    ]


class _Model(ctypes.Structure):
    _fields_ = [
        ("layers", ctypes.c_long),
        ("hidden", ctypes.c_long),
        ("heads", ctypes.c_long),
        ("kv_heads", ctypes.c_long),
        ("head_dim", ctypes.c_long),
        ("intermediate", ctypes.c_long),
        ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
        ("cos_table", _P),
        ("sin_table", _P),
        ("final_norm", _P),
        ("layer", ctypes.POINTER(_Layer)),
    ]


@dataclass(frozen=True, slots=True)
class StepLayerWeights:
    """One layer's float32 CPU tensors, every one contiguous (checked by `LlamaCpuStep`), and
    where given the GGUF blocks the products read instead of a weight (`blocks`: "qkv", "o",
    "gate_up" or "down" -> the same weight, quantized.py; the caller has checked they dequantize
    to it)."""

    input_norm: torch.Tensor  # [hidden]
    post_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(H + 2 Hkv) D, hidden]
    qkv_bias: torch.Tensor | None  # [(H + 2 Hkv) D]
    o: torch.Tensor  # [hidden, H D]
    gate_up: torch.Tensor  # [2 I, hidden]
    down: torch.Tensor  # [hidden, I]
    k_cache: torch.Tensor  # [.., Hkv, D]: flat slots first
    v_cache: torch.Tensor
    blocks: dict[str, QuantizedWeight] | None = None


@dataclass(frozen=True, slots=True)
class StepGeometry:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    scale: float


class LlamaCpuStep:
    """The C step over one model's weights and KV caches (their addresses are taken once: the
    tensors must stay where they are, which the model's parameters and the KV pool do)."""

    def __init__(
        self,
        geometry: StepGeometry,
        layers: list[StepLayerWeights],
        cos_table: torch.Tensor,
        sin_table: torch.Tensor,
        final_norm: torch.Tensor,
    ) -> None:
        kernel = small_gemm()
        if kernel is None:
            raise RuntimeError("the compiled CPU kernels are unavailable")
        g = geometry
        if g.heads % g.kv_heads or g.head_dim % 2 or g.head_dim > MAX_HEAD_DIM:
            raise ValueError(f"unsupported attention geometry {g}")
        qkv_rows = (g.heads + 2 * g.kv_heads) * g.head_dim
        shapes = {
            "input_norm": (g.hidden,),
            "post_norm": (g.hidden,),
            "qkv": (qkv_rows, g.hidden),
            "o": (g.hidden, g.heads * g.head_dim),
            "gate_up": (2 * g.intermediate, g.hidden),
            "down": (g.hidden, g.intermediate),
        }
        for i, layer in enumerate(layers):
            tensors = {name: getattr(layer, name) for name in shapes}
            tensors.update(k_cache=layer.k_cache, v_cache=layer.v_cache)
            if layer.qkv_bias is not None:
                tensors["qkv_bias"] = layer.qkv_bias
            for name, tensor in tensors.items():
                _check(tensor, f"layer {i} {name}")
                if name in shapes and tuple(tensor.shape) != shapes[name]:
                    raise ValueError(f"layer {i} {name}: shape {tuple(tensor.shape)}")
            for name, blocks in (layer.blocks or {}).items():
                if name not in _PRODUCTS or tuple(blocks.shape) != shapes[name]:
                    raise ValueError(f"layer {i} {name} blocks: shape {blocks.shape}")
            for cache in (layer.k_cache, layer.v_cache):
                if tuple(cache.shape[-2:]) != (g.kv_heads, g.head_dim):
                    raise ValueError(f"layer {i}: KV cache shape {tuple(cache.shape)}")
        for name, table in (("cos", cos_table), ("sin", sin_table)):
            _check(table, f"{name} table")
            if table.dim() != 2 or table.shape[1] != g.head_dim:
                raise ValueError(f"{name} table shape {tuple(table.shape)}")
        _check(final_norm, "final norm")
        self.geometry = geometry
        self.max_positions = cos_table.shape[0]
        self.cache_slots = min(layer.k_cache.numel() for layer in layers) // (
            g.kv_heads * g.head_dim
        )
        # Kept so that the addresses in the structs stay valid.
        self._tensors = (layers, cos_table, sin_table, final_norm)
        self._layers = (_Layer * len(layers))(
            *[
                _Layer(
                    layer.input_norm.data_ptr(),
                    layer.post_norm.data_ptr(),
                    _weight(layer, "qkv"),
                    None if layer.qkv_bias is None else layer.qkv_bias.data_ptr(),
                    _weight(layer, "o"),
                    _weight(layer, "gate_up"),
                    _weight(layer, "down"),
                    layer.k_cache.data_ptr(),
                    layer.v_cache.data_ptr(),
                )
                for layer in layers
            ]
        )
        self._model = _Model(
            len(layers),
            g.hidden,
            g.heads,
            g.kv_heads,
            g.head_dim,
            g.intermediate,
            g.eps,
            g.scale,
            cos_table.data_ptr(),
            sin_table.data_ptr(),
            final_norm.data_ptr(),
            self._layers,
        )
        self._run = kernel.lib.rs_llama_forward
        self._run.argtypes = [
            ctypes.POINTER(_Model),
            ctypes.c_long,  # rows
            _P,  # hidden
            _P,  # positions
            _P,  # out slots
            _P,  # kv slots
            ctypes.c_long,  # kv slots' row stride
            _P,  # each token's sequence
            _P,  # each token's visible length
        ]
        self._run.restype = ctypes.c_int

    def __call__(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        out_slots: torch.Tensor,
        kv_slots: torch.Tensor,
        row_seq: torch.Tensor,
        row_len: torch.Tensor,
    ) -> torch.Tensor:
        """hidden [T, hidden] (the new tokens' embeddings; overwritten) -> the final norm's
        output, in place. positions, out_slots [T]: each token's position and KV slot; kv_slots
        [S, max_len]: each sequence's KV slots in order; row_seq [T]: each token's sequence;
        row_len [T]: how many of its sequence's slots it sees (its own included). All int64;
        every index is checked against the tables and caches first, since C would not."""
        rows = hidden.shape[0]
        _check(hidden, "hidden")
        if hidden.shape != (rows, self.geometry.hidden) or rows == 0:
            raise ValueError(f"hidden shape {tuple(hidden.shape)}")
        named = {
            "positions": positions,
            "out_slots": out_slots,
            "row_seq": row_seq,
            "row_len": row_len,
            "kv_slots": kv_slots,
        }
        for name, tensor in named.items():
            if tensor.dtype != torch.int64 or tensor.device.type != "cpu":
                raise ValueError(f"{name} must be int64 on the CPU")
            if not tensor.is_contiguous() or (name != "kv_slots" and tensor.shape != (rows,)):
                raise ValueError(f"{name}: {rows} contiguous entries expected")
        if kv_slots.dim() != 2 or kv_slots.numel() == 0:
            raise ValueError(f"kv_slots shape {tuple(kv_slots.shape)}")
        bounds = {
            "positions": (positions, self.max_positions),
            "out_slots": (out_slots, self.cache_slots),
            "kv_slots": (kv_slots, self.cache_slots),
            "row_seq": (row_seq, kv_slots.shape[0]),
        }
        for name, (tensor, limit) in bounds.items():
            if int(tensor.min()) < 0 or int(tensor.max()) >= limit:
                raise ValueError(f"{name} must lie in 0 .. {limit - 1}")
        if int(row_len.min()) < 1 or int(row_len.max()) > kv_slots.shape[1]:
            raise ValueError(f"row_len must lie in 1 .. {kv_slots.shape[1]}")
        status = self._run(
            ctypes.byref(self._model),
            rows,
            hidden.data_ptr(),
            positions.data_ptr(),
            out_slots.data_ptr(),
            kv_slots.data_ptr(),
            kv_slots.shape[1],
            row_seq.data_ptr(),
            row_len.data_ptr(),
        )
        if status != 0:
            raise MemoryError("the CPU forward step could not allocate its buffers")
        return hidden


_PRODUCTS = ("qkv", "o", "gate_up", "down")


def _weight(layer: StepLayerWeights, name: str) -> WeightRef:
    """The product's weight: float32, with its GGUF blocks where the layer has them (read by
    products of few rows, native/small_gemm.h)."""
    return WeightRef.of(getattr(layer, name), (layer.blocks or {}).get(name))


def _check(tensor: torch.Tensor, what: str) -> None:
    if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError(f"{what}: a contiguous float32 CPU tensor expected")
