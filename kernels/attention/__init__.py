"""Attention backends behind one interface, looked up by name.

The registry maps a name to "module:Class" so that importing the registry never imports FlashInfer
(absent on the CPU) nor torch (the CLI reads its keys); the CLI's choices come from its keys. The
seam itself (`AttentionBackend`, `AttentionShape`, `PagedBatchLayout`) is in `base.py`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import AttentionBackend, AttentionShape


ATTENTION_BACKENDS: dict[str, str] = {
    "torch": "radixserve.kernels.attention.torch_backend:TorchAttentionBackend",
    "flashinfer": "radixserve.kernels.attention.flashinfer_backend:FlashInferAttentionBackend",
}


def create_attention_backend(name: str, shape: AttentionShape) -> AttentionBackend:
    """An instance of the backend registered as `name`; ValueError for an unknown or
    unavailable one."""
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


__all__ = ["ATTENTION_BACKENDS", "create_attention_backend"]
