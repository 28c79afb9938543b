"""The model runner on a GPU: FlashInfer and the torch backend agree, and both match HF."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.model_runner import ModelRunner
from radixserve.runtime.scheduler.step import RequestSlice
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


def test_decode_cuda_graphs_match_eager_decode(tmp_path) -> None:
    """Several decode steps at batch sizes that need padding (5 -> 6, 3, 1): every step's logits
    through the captured graphs equal eager FlashInfer decoding, so padding rows wrote nothing
    into a real request's KV."""
    pytest.importorskip("flashinfer")
    path = build_tiny_model("llama", tmp_path, head_dim=128)
    prompts = [
        [(11 * i + 5 * j) % 320 for j in range(n)] for i, n in enumerate([3, 15, 16, 17, 40])
    ]
    tables = [list(range(i * 8, i * 8 + 8)) for i in range(len(prompts))]
    steps = {}
    for graphs in (True, False):
        runner = ModelRunner(
            ServerArgs(
                model_path=str(path),
                device="cuda",
                dtype="bfloat16",
                page_size=16,
                max_total_tokens=4096,
                disable_cuda_graph=not graphs,
                cuda_graph_max_bs=8,
            )
        )
        assert (runner.decode_graphs is not None) == graphs
        runner.forward([RequestSlice(p, 0, t) for p, t in zip(prompts, tables, strict=True)])
        lengths = [len(p) for p in prompts]
        outputs = []
        for step, live in enumerate([[0, 1, 2, 3, 4], [0, 2, 4], [3], [0, 1, 2, 3, 4]]):
            slices = [RequestSlice([(step * 7 + r) % 320], lengths[r], tables[r]) for r in live]
            _, logits = runner.forward(slices)
            outputs.append(logits.clone())
            for r in live:
                lengths[r] += 1
        steps[graphs] = outputs
    for with_graph, eager in zip(steps[True], steps[False], strict=True):
        scale = eager.abs().max().item()
        assert with_graph.shape == eager.shape
        assert (with_graph - eager).abs().max().item() < 0.01 * scale


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensor_parallel_over_nccl_matches_one_gpu(tmp_path) -> None:
    """Two ranks over NCCL (CUDA graphs and all-reduces inside them) against one GPU: a mixed
    prefill/decode step, then decode steps replayed from graphs."""
    pytest.importorskip("flashinfer")
    from radixserve.runtime.model_executor.tp_worker import create_model_runner

    path = build_tiny_model("llama", tmp_path, head_dim=128)
    prompts = [[(13 * i + 3 * j) % 320 for j in range(n)] for i, n in enumerate([4, 33, 70])]
    tables = [list(range(i * 8, i * 8 + 8)) for i in range(3)]
    results = {}
    for tp_size in (1, 2):
        runner = create_model_runner(
            ServerArgs(
                model_path=str(path),
                device="cuda",
                dtype="bfloat16",
                page_size=16,
                max_total_tokens=4096,
                cuda_graph_max_bs=4,
                tp_size=tp_size,
            )
        )
        try:
            runner.forward(
                [RequestSlice(p[:-1], 0, t) for p, t in zip(prompts, tables, strict=True)]
            )
            lengths = [len(p) - 1 for p in prompts]
            outputs = []
            for step in range(3):
                slices = [RequestSlice([(step + r) % 320], lengths[r], tables[r]) for r in range(3)]
                outputs.append(runner.forward(slices)[1].clone())
                lengths = [n + 1 for n in lengths]
            results[tp_size] = torch.stack(outputs)
        finally:
            if tp_size > 1:
                runner.shutdown()
    scale = results[1].abs().max().item()
    assert (results[2] - results[1]).abs().max().item() < 0.03 * scale
