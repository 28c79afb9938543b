"""Model classes looked up by the config's `architectures` entry.

Values are "module:Class" strings so looking a model up imports only that model's module.
"""

from __future__ import annotations

import importlib

from torch import nn

from ..model_config import ModelConfig

_LLAMA = "radixserve.runtime.model_executor.models.llama:LlamaForCausalLM"

MODEL_REGISTRY: dict[str, str] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": _LLAMA,
    "Qwen3ForCausalLM": _LLAMA,
}


class UnsupportedArchitectureError(ValueError):
    pass


def model_class(architecture: str) -> type[nn.Module]:
    if architecture not in MODEL_REGISTRY:
        raise UnsupportedArchitectureError(
            f"unsupported model architecture {architecture!r}; supported: "
            + ", ".join(sorted(MODEL_REGISTRY))
        )
    module_name, class_name = MODEL_REGISTRY[architecture].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(config: ModelConfig) -> nn.Module:
    return model_class(config.architecture)(config)
