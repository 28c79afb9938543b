"""Model classes looked up by the config's `architectures` entry.

Values are "module:Class" strings so looking a model up imports only that model's module.
"""

from __future__ import annotations

from torch import nn

from ....utils.registry import Registry
from ..model_config import ModelConfig


class UnsupportedArchitectureError(ValueError):
    pass


_LLAMA = ".llama:LlamaForCausalLM"

MODEL_REGISTRY: Registry[nn.Module] = Registry(
    "model architecture",
    {
        "LlamaForCausalLM": _LLAMA,
        "MistralForCausalLM": _LLAMA,
        "Qwen2ForCausalLM": _LLAMA,
        "Qwen3ForCausalLM": _LLAMA,
    },
    package=__name__,
    base=nn.Module,
    error=UnsupportedArchitectureError,
)


def model_class(architecture: str) -> type[nn.Module]:
    return MODEL_REGISTRY.load(architecture)


def build_model(config: ModelConfig) -> nn.Module:
    return model_class(config.architecture)(config)
