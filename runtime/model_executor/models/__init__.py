"""Model classes looked up by the config's `architectures` entry.

Values are "module:Class" strings so looking a model up imports only that model's module.
"""

from __future__ import annotations

from ....utils.registry import Registry
from ..model_config import ModelConfig
from .base import CausalLM


class UnsupportedArchitectureError(ValueError):
    pass


_LLAMA = ".llama:LlamaForCausalLM"

MODEL_REGISTRY: Registry[CausalLM] = Registry(
    "model architecture",
    {
        "LlamaForCausalLM": _LLAMA,
        "MistralForCausalLM": _LLAMA,
        "Qwen2ForCausalLM": _LLAMA,
        "Qwen3ForCausalLM": _LLAMA,
    },
    package=__name__,
    base=CausalLM,  # every architecture implements the model seam
    error=UnsupportedArchitectureError,
)


def model_class(architecture: str) -> type[CausalLM]:
    return MODEL_REGISTRY.load(architecture)


def build_model(config: ModelConfig) -> CausalLM:
    return model_class(config.architecture)(config)
