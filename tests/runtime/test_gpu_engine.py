"""The model runner on a GPU: FlashInfer and the torch backend agree, and both match HF."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.model_runner import ModelRunner
from radixserve.runtime.server_args import ServerArgs
from radixserve.runtime.step import RequestSlice
from tests.runtime.tiny_models import build_tiny_model

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_flashinfer_runner_matches_torch_backend_and_hf(kind: str, tmp_path) -> None:
    pytest.importorskip("flashinfer")
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(kind, tmp_path, head_dim=128)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda().eval()
    prompts = [[(7 * i + 3 * j) % 320 for j in range(n)] for i, n in enumerate([5, 40, 130])]
    logits = {}
    for backend in ("flashinfer", "torch"):
        runner = ModelRunner(
            ServerArgs(
                model_path=str(path),
                device="cuda",
                dtype="bfloat16",
                attention_backend=backend,
                page_size=16,
                max_total_tokens=4096,
            )
        )
        # Prefill all but the last token, then one mixed step: two decodes and a fresh prompt.
        tables = [list(range(i * 16, i * 16 + 16)) for i in range(3)]
        runner.forward(
            [RequestSlice(p[:-1], 0, t) for p, t in zip(prompts[:2], tables, strict=False)]
        )
        slices = [
            RequestSlice(prompts[0][-1:], len(prompts[0]) - 1, tables[0]),
            RequestSlice(prompts[1][-1:], len(prompts[1]) - 1, tables[1]),
            RequestSlice(prompts[2], 0, tables[2]),
        ]
        _, logits[backend] = runner.forward(slices)
    with torch.no_grad():
        ref = torch.stack(
            [hf(torch.tensor([p], device="cuda")).logits[0, -1].float() for p in prompts]
        )
    scale = ref.abs().max().item()
    assert (logits["flashinfer"] - logits["torch"]).abs().max().item() < 0.03 * scale
    assert (logits["flashinfer"] - ref).abs().max().item() < 0.05 * scale
