"""When a Llama-family model's batch runs as one C call on the CPU (kernels/cpu/llama_step.py),
and the adapter from the model's modules to that call.

It applies to a float32 model on the CPU, in a tensor-parallel group of one, without q/k norms or
biases other than q/k/v's, with products through the compiled kernels (not turned off by
--cpu-blas-threads 0 or RADIXSERVE_CPU_NATIVE=0), a float32 KV pool, and to batches of at most
llama_step.MAX_ROWS new tokens (decodes, prefill chunks, or both), under the torch attention
backend. Everything else keeps the module path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from ....kernels.attention.torch_backend import TorchAttentionBackend
from ....kernels.cpu.blas_linear import blas_linear_enabled
from ....kernels.cpu.lane_attention import MAX_HEAD_DIM
from ....kernels.cpu.llama_step import (
    MAX_ROWS,
    LlamaCpuStep,
    StepGeometry,
    StepLayerWeights,
)
from ....kernels.cpu.quantized import QuantizedWeight
from ....kernels.cpu.small_gemm import small_gemm
from ..distributed import tp_group
from ..kv_pool import KVPool
from .layers.attention import ForwardContext

if TYPE_CHECKING:
    from .llama import LlamaDecoderLayer, LlamaForCausalLM


class CpuStep:
    """The model's C step, built on first use for each KV pool."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        self.model = model
        # Batches of more new tokens keep the module path (benchmarks/bench_cpu_prefill.py sets
        # 0 to time that path beside this one).
        self.max_rows = MAX_ROWS
        self._step: LlamaCpuStep | None = None
        self._pool: KVPool | None = None

    def applies_to_model(self) -> bool:
        model, config = self.model, self.model.config
        return (
            model.embed_tokens.weight.device.type == "cpu"
            and all(p.dtype == torch.float32 for p in model.parameters())
            and tp_group().size == 1
            and not config.qk_norm
            and not config.o_proj_bias
            and not config.mlp_bias
            and cast("LlamaDecoderLayer", model.layers[0]).self_attn.head_dim <= MAX_HEAD_DIM
            and blas_linear_enabled()
            and small_gemm() is not None
        )

    def run(self, ctx: ForwardContext, hidden: torch.Tensor) -> torch.Tensor | None:
        """The final norm's output for this batch's embeddings `hidden`, or None where the batch
        or the model is not one the C step takes (module docstring)."""
        if (
            not isinstance(ctx.attention, TorchAttentionBackend)
            or hidden.dtype != torch.float32
            or not 0 < hidden.shape[0] <= self.max_rows
            or ctx.kv_pool.k_buffers[0].dtype != torch.float32
        ):
            return None
        step = self._step_for(ctx.kv_pool)
        if step is None:
            return None
        kv_slots, row_seq, row_len = ctx.attention.token_slots()
        batch = ctx.batch
        return step(hidden, batch.positions, batch.out_cache_loc, kv_slots, row_seq, row_len)

    def _step_for(self, pool: KVPool) -> LlamaCpuStep | None:
        if self._pool is not pool:
            self._pool = pool
            self._step = self._build(pool) if self.applies_to_model() else None
        return self._step

    def _build(self, pool: KVPool) -> LlamaCpuStep:
        model = self.model
        decoder = [cast("LlamaDecoderLayer", layer) for layer in model.layers]
        first = decoder[0]
        attn = first.self_attn
        layers = [
            StepLayerWeights(
                input_norm=layer.input_layernorm.weight,
                post_norm=layer.post_attention_layernorm.weight,
                qkv=layer.self_attn.qkv_proj.weight,
                qkv_bias=layer.self_attn.qkv_proj.bias,
                o=layer.self_attn.o_proj.weight,
                gate_up=layer.mlp.gate_up_proj.weight,
                down=layer.mlp.down_proj.weight,
                k_cache=pool.k_buffers[i],
                v_cache=pool.v_buffers[i],
                blocks=_layer_blocks(layer),
            )
            for i, layer in enumerate(decoder)
        ]
        geometry = StepGeometry(
            hidden=model.config.hidden_size,
            heads=attn.num_heads,
            kv_heads=attn.num_kv_heads,
            head_dim=attn.head_dim,
            intermediate=first.mlp.gate_up_proj.weight.shape[0] // 2,
            eps=first.input_layernorm.eps,
            scale=attn.attn.scaling,
        )
        rotary = attn.rotary
        return LlamaCpuStep(geometry, layers, rotary.cos_table, rotary.sin_table, model.norm.weight)


def _layer_blocks(layer: LlamaDecoderLayer) -> dict[str, QuantizedWeight]:
    """The layer's products that have GGUF blocks (CausalLM.use_cpu_blocks)."""
    modules = {
        "qkv": layer.self_attn.qkv_proj,
        "o": layer.self_attn.o_proj,
        "gate_up": layer.mlp.gate_up_proj,
        "down": layer.mlp.down_proj,
    }
    return {name: m.blocks for name, m in modules.items() if m.blocks is not None}
