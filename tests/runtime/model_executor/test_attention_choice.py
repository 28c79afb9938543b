"""Which attention backend "auto" picks, and a FlashInfer request the head size rules out."""

from __future__ import annotations

import pytest

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.device import resolve_attention_backend


def test_auto_picks_flashinfer_on_a_gpu_for_the_head_sizes_it_supports() -> None:
    gpu = ServerArgs(device="cuda")
    assert resolve_attention_backend(gpu, 128) == "flashinfer"
    assert resolve_attention_backend(gpu, 64) == "flashinfer"
    # A tiny model's 16-wide heads: FlashInfer's kernels are not built for them.
    assert resolve_attention_backend(gpu, 16) == "torch"
    assert resolve_attention_backend(ServerArgs(device="cpu"), 128) == "torch"


def test_flashinfer_asked_for_an_unsupported_head_size_is_a_clear_error() -> None:
    args = ServerArgs(device="cuda", attention_backend="flashinfer")
    assert resolve_attention_backend(args, 128) == "flashinfer"
    with pytest.raises(ValueError, match="head_dim .* has 16: use --attention-backend torch"):
        resolve_attention_backend(args, 16)
