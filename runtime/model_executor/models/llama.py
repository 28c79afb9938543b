"""Llama-family decoder: Llama 2/3/3.1, Mistral, Qwen2/2.5 (qkv bias), Qwen3 (q/k RMSNorm).

The variants differ only in flags of `ModelConfig` (biases, q/k norm, rope scaling, tied head),
so one implementation serves them all.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ....kernels import fused
from ....kernels.cpu.quantized import QuantizedWeight
from ..model_config import ModelConfig
from .base import AttentionGeometry, CausalLM
from .cpu_step import CpuStep
from .layers.activation import silu_and_mul
from .layers.attention import ForwardContext, PagedAttention
from .layers.embedding import ParallelLMHead, VocabParallelEmbedding
from .layers.linear import (
    MergedColumnLinear,
    QKVLinear,
    RowParallelLinear,
    copy_weight_checked,
)
from .layers.norm import RMSNorm
from .layers.rotary import RotaryEmbedding


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        d = config.head_dim
        self.qkv_proj = QKVLinear(
            config.hidden_size, d, config.num_heads, config.num_kv_heads, config.attention_bias
        )
        self.num_heads = self.qkv_proj.local_heads
        self.num_kv_heads = self.qkv_proj.local_kv_heads
        self.head_dim = d
        self.o_proj = RowParallelLinear(
            config.num_heads * d, config.hidden_size, config.o_proj_bias
        )
        self.q_norm = RMSNorm(d, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(d, config.rms_norm_eps) if config.qk_norm else None
        self.rotary = rotary
        self.attn = PagedAttention(layer_id, self.num_heads, self.num_kv_heads, d)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, ctx: ForwardContext
    ) -> torch.Tensor:
        k_cache, v_cache = ctx.kv_pool.layer(self.attn.layer_id)
        slots = ctx.batch.out_cache_loc
        if self._one_launch_qkv(x, k_cache):
            q = fused.qkv_rotary_store(
                x,
                self.qkv_proj.weight,
                self.qkv_proj.bias,
                positions,
                self.rotary.cos_table,
                self.rotary.sin_table,
                k_cache,
                v_cache,
                slots,
                self.num_heads,
                self.num_kv_heads,
            )
            return self.o_proj(self.attn.attend(q, ctx))
        qkv = self.qkv_proj(x)
        q_size = self.num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        rotated_q = self.rotary.rotate_into_cache(positions, q, k, v, k_cache, v_cache, slots)
        if rotated_q is not None:  # one fused launch rotated q and k and stored k and v
            return self.o_proj(self.attn.attend(rotated_q, ctx))
        q, k = self.rotary(positions, q, k)
        return self.o_proj(self.attn(q, k, v, ctx))

    def _one_launch_qkv(self, x: torch.Tensor, k_cache: torch.Tensor) -> bool:
        """A one-row decode (the batch-1 step, bound by reading weights) projects, rotates and
        stores in one launch, where no q/k norm sits between the projection and the rotation and
        the rotary kernels would store fused anyway."""
        return (
            self.q_norm is None
            and self.rotary.stores_fused(x, k_cache)
            and k_cache.is_contiguous()
            and fused.gemv_applies(x, self.qkv_proj.weight)
        )


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        size = config.intermediate_size
        self.gate_up_proj = MergedColumnLinear(config.hidden_size, [size, size], config.mlp_bias)
        self.down_proj = RowParallelLinear(size, config.hidden_size, config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_id, rotary)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        positions: torch.Tensor,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        ctx: ForwardContext,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, residual = self.input_layernorm.forward_with_residual(hidden, residual)
        hidden = self.self_attn(positions, hidden, ctx)
        hidden, residual = self.post_attention_layernorm.forward_with_residual(hidden, residual)
        return self.mlp(hidden), residual


class LlamaForCausalLM(CausalLM):
    # checkpoint name fragment -> (our parameter fragment, shard id)
    STACKED_PARAMS = (
        (".q_proj.", ".qkv_proj.", "q"),
        (".k_proj.", ".qkv_proj.", "k"),
        (".v_proj.", ".qkv_proj.", "v"),
        (".gate_proj.", ".gate_up_proj.", 0),
        (".up_proj.", ".gate_up_proj.", 1),
    )

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        rotary = RotaryEmbedding(config.head_dim, config.max_context_len, config.rope)
        layers = [LlamaDecoderLayer(config, i, rotary) for i in range(config.num_layers)]
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        attn = layers[0].self_attn.attn  # every layer has the same shard of heads
        self._geometry = AttentionGeometry(
            attn.num_heads, attn.num_kv_heads, attn.head_dim, attn.scaling
        )
        self._cpu_step = CpuStep(self)  # a small CPU batch in one C call, where it applies

    @property
    def attention_geometry(self) -> AttentionGeometry:
        return self._geometry

    @property
    def cpu_step(self) -> CpuStep:
        """Where batches run as one C call on the CPU (cpu_step.py)."""
        return self._cpu_step

    def use_cpu_blocks(self, blocks: dict[str, QuantizedWeight]) -> int:
        used = super().use_cpu_blocks(blocks)
        self._cpu_step = CpuStep(self)  # built again on first use, over the blocks
        return used

    def forward(self, ctx: ForwardContext) -> torch.Tensor:
        """Runs the batch and returns float32 logits for `ctx.batch.logits_rows` only."""
        batch = ctx.batch
        hidden = self.embed_tokens(batch.input_ids)
        normed = self._cpu_step.run(ctx, hidden)
        if normed is None:
            residual: torch.Tensor | None = None
            for layer in self.layers:
                hidden, residual = layer(batch.positions, hidden, residual, ctx)
            normed, _ = self.norm.forward_with_residual(hidden, residual)
        hidden = normed
        return self.lm_head.compute_logits(hidden.index_select(0, batch.logits_rows))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies checkpoint tensors (HF names) into this rank's shards; checks completeness."""
        params = dict(self.named_parameters())
        # Every (parameter, shard) pair a complete checkpoint provides.
        missing: set[tuple[str, object]] = set()
        for name in params:
            shards = [s for part, new, s in self.STACKED_PARAMS if new in name]
            missing.update((name, s) for s in shards or [None])
        if self.config.tie_word_embeddings:
            missing.discard(("lm_head.weight", None))
        for hf_name, tensor in weights:
            name = hf_name.removeprefix("model.")
            if "rotary_emb.inv_freq" in name:
                continue
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue
            shard_id: object = None
            for ckpt_part, param_part, stacked_id in self.STACKED_PARAMS:
                if ckpt_part in name:
                    name, shard_id = name.replace(ckpt_part, param_part), stacked_id
                    break
            if name not in params:
                raise ValueError(f"checkpoint tensor {hf_name!r} matches no model parameter")
            param = params[name]
            loader = getattr(param, "weight_loader", None)
            if loader is None:
                copy_weight_checked(param.data, tensor)
            else:
                loader(param, tensor.to(param.dtype), shard_id)
            missing.discard((name, shard_id))
        if missing:
            names = sorted(f"{n}[{s}]" if s is not None else n for n, s in missing)
            raise ValueError(f"checkpoint is missing weights for: {names[:8]}")
