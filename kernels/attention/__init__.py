"""Attention backends behind one interface, looked up by name.

The registry maps a name to "module:Class" so that importing the registry never imports FlashInfer
(absent on the CPU); the CLI's choices come from its keys.
"""

from __future__ import annotations

import importlib

from radixserve.kernels.attention.base import AttentionBackend, AttentionShape, PagedBatchLayout

ATTENTION_BACKENDS: dict[str, str] = {
    "torch": "radixserve.kernels.attention.torch_backend:TorchAttentionBackend",
    "flashinfer": "radixserve.kernels.attention.flashinfer_backend:FlashInferAttentionBackend",
}


def create_attention_backend(name: str, shape: AttentionShape) -> AttentionBackend:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"unknown attention backend {name!r}; choose one of {sorted(ATTENTION_BACKENDS)}"
        )
    module_name, class_name = ATTENTION_BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"attention backend {name!r} is not available here: {exc}") from exc
    return getattr(module, class_name)(shape)


__all__ = [
    "ATTENTION_BACKENDS",
    "AttentionBackend",
    "AttentionShape",
    "PagedBatchLayout",
    "create_attention_backend",
]
