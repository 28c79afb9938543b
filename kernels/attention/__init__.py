"""Attention backends behind one interface, looked up by name.

The registry maps a name to "module:Class" so that importing the registry never imports FlashInfer
(absent on the CPU) nor torch (the CLI reads its keys); the CLI's choices come from its keys. The
seam itself (`AttentionBackend`, `AttentionShape`, `PagedBatchLayout`) is in `base.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...utils.registry import Registry

if TYPE_CHECKING:
    from .base import AttentionBackend, AttentionShape

# No `base=`: importing base.py would import torch; the annotation types what `load` returns.
ATTENTION_BACKENDS: Registry[AttentionBackend] = Registry(
    "attention backend",
    {
        "torch": ".torch_backend:TorchAttentionBackend",
        "flashinfer": ".flashinfer_backend:FlashInferAttentionBackend",
    },
    package=__name__,
)


def create_attention_backend(name: str, shape: AttentionShape) -> AttentionBackend:
    """An instance of the backend registered as `name`; ValueError for an unknown one, or one
    that cannot be imported here (the message lists the choices)."""
    return ATTENTION_BACKENDS.load(name)(shape)


__all__ = ["ATTENTION_BACKENDS", "create_attention_backend"]
