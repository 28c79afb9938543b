"""The model runner on a GPU: FlashInfer and the torch backend agree, and both match HF."""

from __future__ import annotations

from pathlib import Path

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


def save_word_level_tokenizer(directory: Path, vocab_size: int) -> None:
    """A tokenizer whose ids are words w0 .. w{vocab_size-1}: enough for an Engine over a
    random-weight model driven by input_ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="w1").save_pretrained(directory)


def test_engine_decodes_512_requests_through_512_row_graphs_on_the_llama_8b_shape() -> None:
    """Issue 11: `cuda_graph_max_bs=512` on the Llama-3.1-8B shape failed at start-up (the graph
    workspace was a 128 MiB literal). The Engine starts, and 512 requests decode together in
    pure-decode steps of 512 rows, the batch the largest graph replays."""
    pytest.importorskip("flashinfer")
    import gc
    import random

    from benchmarks.bench_gpu_decode import LLAMA_31_8B, write_model_dir
    from radixserve import Engine

    model_dir = write_model_dir()
    save_word_level_tokenizer(model_dir, LLAMA_31_8B["vocab_size"])
    engine = Engine(
        model_path=str(model_dir),
        load_format="dummy",
        device="cuda",
        dtype="bfloat16",
        page_size=16,
        context_length=8192,
        max_total_tokens=150_000,  # 19 GiB of KV: the 8B-shape tests fit the GPU side by side
        cuda_graph_max_bs=512,
        max_running_requests=512,
        chunked_prefill_size=16384,  # every prompt in one step, then decodes only
        max_prefill_tokens=16384,
    )
    try:
        graphs = engine.state.runner.decode_graphs  # type: ignore[attr-defined]
        assert graphs is not None and graphs.max_bs == 512 and 512 in graphs.graphs
        rng = random.Random(0)
        prompts = [[rng.randrange(2, 128000) for _ in range(24)] for _ in range(512)]
        params = {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True}
        outputs = engine.generate(input_ids=prompts, sampling_params=params)
        assert [len(o["output_ids"]) for o in outputs] == [8] * 512
        counters = engine.scheduler.counters
        assert counters.decode_tokens >= 512 * 7  # 7 steps of 512 decodes, one graph each
        assert all(0 <= t < LLAMA_31_8B["vocab_size"] for o in outputs for t in o["output_ids"])
    finally:
        engine.shutdown()
        del engine
        gc.collect()
        torch.cuda.empty_cache()


def test_overlap_on_and_off_give_the_same_greedy_outputs_on_the_llama_8b_shape() -> None:
    """Issue 11: one Engine, overlap scheduling toggled (caches flushed in between).

    Identical batches: every prompt prefills in one step and all stop by length together, so
    with overlap no sample ends a request early and no wasted decode changes a batch; the
    kernels see the same inputs, and the greedy outputs must be identical. Then batch 1 and a
    batch of mixed lengths (wasted decodes, chunked prefill), timed both ways: the gain is
    printed, and overlap must not be slower beyond noise."""
    pytest.importorskip("flashinfer")
    import gc
    import random
    import time

    from benchmarks.bench_gpu_decode import LLAMA_31_8B, write_model_dir
    from radixserve import Engine

    model_dir = write_model_dir()
    save_word_level_tokenizer(model_dir, LLAMA_31_8B["vocab_size"])
    engine = Engine(
        model_path=str(model_dir),
        load_format="dummy",
        device="cuda",
        dtype="bfloat16",
        page_size=16,
        context_length=8192,
        max_total_tokens=150_000,  # 19 GiB of KV: the 8B-shape tests fit the GPU side by side
        cuda_graph_max_bs=256,
        max_running_requests=256,
        chunked_prefill_size=16384,
        max_prefill_tokens=16384,
        disable_overlap_schedule=False,
    )
    scheduler, generate = engine.scheduler, engine.generate
    rng = random.Random(0)

    def run(overlap: bool, prompts: list[list[int]], params: list[dict]) -> tuple[list, float]:
        assert scheduler.flush_cache()
        scheduler.overlap = overlap
        torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = generate(input_ids=prompts, sampling_params=params)
        elapsed = time.perf_counter() - start
        scheduler.check_integrity()
        return [o["output_ids"] for o in outputs], elapsed  # type: ignore[index]

    try:
        assert scheduler.overlap
        prompts = [
            [rng.randrange(2, 128000) for _ in range(rng.randrange(16, 400))] for _ in range(64)
        ]
        same = [{"max_new_tokens": 48, "temperature": 0, "ignore_eos": True}] * len(prompts)
        run(True, prompts[:4], same[:4])  # warm-up
        before = scheduler.counters.overlapped_steps, scheduler.counters.dropped_results
        on, _ = run(True, prompts, same)
        overlapped = scheduler.counters.overlapped_steps - before[0]
        assert overlapped >= 48 and scheduler.counters.dropped_results == before[1]
        off, _ = run(False, prompts, same)
        assert on == off
        assert all(len(ids) == 48 for ids in on)

        gains = {}
        single = [{"max_new_tokens": 256, "temperature": 0, "ignore_eos": True}]
        mixed = [
            {"max_new_tokens": rng.randrange(32, 256), "temperature": 0, "ignore_eos": True}
            for _ in prompts
        ]
        for name, batch, params in (("batch 1", prompts[:1], single), ("mixed", prompts, mixed)):
            times = {}
            for overlap in (False, True, False, True):
                outputs, elapsed = run(overlap, batch, params)
                assert [len(o) for o in outputs] == [p["max_new_tokens"] for p in params]
                times.setdefault(overlap, []).append(elapsed)
            tokens = sum(p["max_new_tokens"] for p in params)
            rates = {k: tokens / min(v) for k, v in times.items()}
            gains[name] = rates[True] / rates[False]
            print(
                f"{name}: {rates[False]:.0f} tok/s off, {rates[True]:.0f} on ({gains[name]:.2f}x)"
            )
        assert all(gain > 0.95 for gain in gains.values()), gains
    finally:
        engine.shutdown()
        del engine
        gc.collect()
        torch.cuda.empty_cache()
