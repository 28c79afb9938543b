"""The model's shape, read once from a Hugging Face config.

Everything the runner, the KV pool and the attention backends need to know about a model lives in
`ModelConfig`, so no other module reads HF config attributes (whose names differ between
transformers 4.x and 5.x, e.g. `rope_theta` vs `rope_parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

CAUSAL_LM_BY_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


@dataclass(slots=True, frozen=True)
class RopeConfig:
    theta: float
    rope_type: str = "default"  # default | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclass(slots=True, frozen=True)
class ModelConfig:
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope: RopeConfig
    max_context_len: int
    tie_word_embeddings: bool
    attention_bias: bool  # bias on q/k/v projections
    o_proj_bias: bool
    mlp_bias: bool
    qk_norm: bool  # Qwen3: per-head RMSNorm on q and k before RoPE
    eos_token_ids: tuple[int, ...]
    hf_config: Any = field(repr=False, compare=False, default=None)

    @classmethod
    def from_hf(cls, hf: Any) -> ModelConfig:
        model_type = getattr(hf, "model_type", "")
        # GGUF-derived configs carry a model_type but no `architectures` list.
        architectures = getattr(hf, "architectures", None) or [
            a for a in [CAUSAL_LM_BY_MODEL_TYPE.get(model_type)] if a
        ]
        if not architectures:
            raise ValueError(
                f"model config has no `architectures` entry and model_type {model_type!r} is not "
                "one we can map; cannot choose a model class"
            )
        num_heads = hf.num_attention_heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // num_heads
        is_qwen2 = model_type == "qwen2"
        attention_bias = bool(getattr(hf, "attention_bias", False)) or is_qwen2
        return cls(
            architecture=architectures[0],
            model_type=model_type,
            num_layers=hf.num_hidden_layers,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_heads=num_heads,
            num_kv_heads=getattr(hf, "num_key_value_heads", None) or num_heads,
            head_dim=head_dim,
            vocab_size=hf.vocab_size,
            rms_norm_eps=float(hf.rms_norm_eps),
            rope=_rope_config(hf),
            max_context_len=int(getattr(hf, "max_position_embeddings", 2048)),
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            attention_bias=attention_bias,
            # Qwen2 puts a bias on q/k/v only; Llama's `attention_bias` covers o_proj too.
            o_proj_bias=attention_bias and not is_qwen2 and model_type != "qwen3",
            mlp_bias=bool(getattr(hf, "mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            eos_token_ids=_eos_ids(hf),
            hf_config=hf,
        )

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Bytes of K plus V for one token across all layers."""
        element = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element


def _rope_config(hf: Any) -> RopeConfig:
    # transformers 5 folds theta and scaling into `rope_parameters`; 4.x has both attributes.
    params = dict(getattr(hf, "rope_parameters", None) or {})
    scaling = dict(getattr(hf, "rope_scaling", None) or {})
    merged = {**scaling, **params}
    theta = merged.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
    rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
    if rope_type not in ("default", "linear", "llama3"):
        raise ValueError(f"unsupported rope_type {rope_type!r}; supported: default, linear, llama3")
    return RopeConfig(
        theta=float(theta),
        rope_type=rope_type,
        factor=float(merged.get("factor", 1.0)),
        low_freq_factor=float(merged.get("low_freq_factor", 1.0)),
        high_freq_factor=float(merged.get("high_freq_factor", 4.0)),
        original_max_position=int(merged.get("original_max_position_embeddings", 8192)),
    )


def _eos_ids(hf: Any) -> tuple[int, ...]:
    eos = getattr(hf, "eos_token_id", None)
    if eos is None:
        return ()
    if isinstance(eos, int):
        return (eos,)
    return tuple(int(e) for e in eos)
