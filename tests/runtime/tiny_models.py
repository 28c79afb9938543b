"""Tiny random-weight Llama / Qwen2 / Qwen3 checkpoints built with transformers."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_KINDS = ("llama", "qwen2", "qwen3")


def build_tiny_model(kind: str, directory: Path, seed: int = 0, head_dim: int = 16) -> Path:
    """Saves a 2-layer model of `kind` (with GQA, 4 query heads of `head_dim`) as safetensors
    into directory/kind. GPU kernels want head_dim 64 or 128; the CPU tests keep it tiny."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    common = dict(
        vocab_size=320,
        hidden_size=4 * head_dim,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
    )
    if kind == "llama":
        # Llama 3.1-style rope scaling, exercised at positions past the original window.
        config = LlamaConfig(
            **common,
            tie_word_embeddings=False,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        )
        model_cls = LlamaForCausalLM
    elif kind == "qwen2":
        config, model_cls = Qwen2Config(**common, tie_word_embeddings=True), Qwen2ForCausalLM
    elif kind == "qwen3":
        # Qwen3 decouples head_dim from hidden_size / heads: exercised on the CPU; GPU runs keep
        # one head_dim so the kernels compile once.
        qwen3_head_dim = 2 * head_dim if head_dim < 64 else head_dim
        config = Qwen3Config(**common, head_dim=qwen3_head_dim, tie_word_embeddings=False)
        model_cls = Qwen3ForCausalLM
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # Random biases and norms, so that a missed bias or norm cannot pass by being zero or one.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    out = directory / kind
    model.save_pretrained(out, safe_serialization=True)
    return out
