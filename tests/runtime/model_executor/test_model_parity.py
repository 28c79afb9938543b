"""Logits parity with HF transformers on tiny random-weight models, over the paged KV cache."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.forward_batch import RequestSlice
from radixserve.runtime.model_executor.model_runner import ModelRunner
from tests.runtime.tiny_models import TINY_KINDS, build_tiny_model

TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=TINY_KINDS)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(request.param, tmp_path_factory.mktemp("models"))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return path, hf


def make_runner(path: Path, page_size: int) -> ModelRunner:
    return ModelRunner(
        ServerArgs(model_path=str(path), page_size=page_size, max_total_tokens=4096, device="cpu")
    )


def hf_last_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0, -1].float()


def prompts(seed: int, lengths: list[int], vocab: int = 320) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(n)] for n in lengths]


class PageAllocator:
    """Hands out pages in a shuffled order so page tables are never contiguous."""

    def __init__(self, num_pages: int, seed: int) -> None:
        self.free = list(range(num_pages))
        random.Random(seed).shuffle(self.free)

    def take(self, n: int) -> list[int]:
        pages, self.free = self.free[:n], self.free[n:]
        return pages


def pages_for(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)


@pytest.mark.parametrize("page_size", [1, 16])
def test_whole_prompts(tiny, page_size: int) -> None:
    path, hf = tiny
    runner = make_runner(path, page_size)
    alloc = PageAllocator(runner.kv_pool.num_pages, seed=1)
    batch = prompts(0, [1, 7, 33, 130])
    slices = [RequestSlice(p, 0, alloc.take(pages_for(len(p), page_size))) for p in batch]
    _, logits = runner.forward(slices)
    for row, p in enumerate(batch):
        diff = (logits[row] - hf_last_logits(hf, p)).abs().max().item()
        assert diff <= TOLERANCE, f"prompt of {len(p)} tokens: max abs diff {diff}"


@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_chunked_prefill_over_paged_cache(tiny, page_size: int) -> None:
    path, hf = tiny
    runner = make_runner(path, page_size)
    alloc = PageAllocator(runner.kv_pool.num_pages, seed=2)
    (prompt,) = prompts(1, [150])
    pages = alloc.take(pages_for(len(prompt), page_size))
    bounds = [0, 37, 64, 101, 150]  # chunk edges deliberately not page-aligned
    for start, end in zip(bounds, bounds[1:], strict=False):
        _, logits = runner.forward([RequestSlice(prompt[start:end], start, pages)])
        diff = (logits[0] - hf_last_logits(hf, prompt[:end])).abs().max().item()
        assert diff <= TOLERANCE, f"chunk ending at {end}: max abs diff {diff}"


@pytest.mark.parametrize("page_size", [1, 16])
def test_mixed_batch_of_prefills_and_decodes(tiny, page_size: int) -> None:
    path, hf = tiny
    runner = make_runner(path, page_size)
    alloc = PageAllocator(runner.kv_pool.num_pages, seed=3)
    full = prompts(2, [40, 90, 12, 200])
    cached = [39, 50, 0, 120]  # decode, chunk continuation, fresh prompt, long continuation
    tables = [alloc.take(pages_for(len(p), page_size)) for p in full]
    # Fill the caches of the cached prefixes one request at a time.
    for p, n, table in zip(full, cached, tables, strict=True):
        if n:
            runner.forward([RequestSlice(p[:n], 0, table)])
    slices = [
        RequestSlice(p[n:], n, table) for p, n, table in zip(full, cached, tables, strict=True)
    ]
    _, logits = runner.forward(slices)
    for row, p in enumerate(full):
        diff = (logits[row] - hf_last_logits(hf, p)).abs().max().item()
        assert diff <= TOLERANCE, f"request {row}: max abs diff {diff}"


def test_shuffled_pages_give_same_logits(tiny) -> None:
    path, _ = tiny
    page_size = 4
    runner = make_runner(path, page_size)
    (prompt,) = prompts(3, [61])
    n_pages = pages_for(len(prompt), page_size)
    in_order = list(range(n_pages))
    shuffled = PageAllocator(runner.kv_pool.num_pages, seed=4).take(n_pages)
    _, a = runner.forward([RequestSlice(prompt, 0, in_order)])
    _, b = runner.forward([RequestSlice(prompt, 0, shuffled)])
    assert torch.equal(a, b) or (a - b).abs().max().item() <= 1e-6


def test_all_position_logits_match_hf(tiny) -> None:
    path, hf = tiny
    runner = make_runner(path, 16)
    (prompt,) = prompts(5, [50])
    _, logits = runner.forward([RequestSlice(prompt, 0, list(range(4)), logits_from=0)])
    with torch.no_grad():
        expected = hf(torch.tensor([prompt])).logits[0].float()
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("page_size", [1, 16])
def test_decode_batches_over_several_steps(tiny, page_size: int, monkeypatch) -> None:
    """Batches whose every row is one new token: on the CPU the Llama and Qwen2 models run them
    as one C call (kernels/cpu/llama_step.py; Qwen3's q/k norms keep the module path), each
    step reading the K/V the previous one wrote; so do the prompts, 300 tokens among them (its
    products in row blocks of 128, its attention 16 rows at a time)."""
    path, hf = tiny
    calls = count_c_steps(monkeypatch)
    runner = make_runner(path, page_size)
    # The compiled kernels read torch's own row-major layout (kernels/cpu/small_gemm.py).
    assert all(p.is_contiguous() for p in runner.model.parameters())
    alloc = PageAllocator(runner.kv_pool.num_pages, seed=6)
    full = prompts(7, [5, 70, 33, 300])
    steps = 3
    tables = [alloc.take(pages_for(len(p) + steps, page_size)) for p in full]
    for p, table in zip(full, tables, strict=True):
        runner.forward([RequestSlice(p, 0, table)])
    for step in range(steps):
        next_ids = [(len(p) * 7 + step) % 320 for p in full]
        slices = [
            RequestSlice([t], len(p), table)
            for p, t, table in zip(full, next_ids, tables, strict=True)
        ]
        _, logits = runner.forward(slices)
        full = [p + [t] for p, t in zip(full, next_ids, strict=True)]
        for row, p in enumerate(full):
            diff = (logits[row] - hf_last_logits(hf, p)).abs().max().item()
            assert diff <= TOLERANCE, f"step {step}, request {row}: max abs diff {diff}"
    qk_norm = runner.model.config.qk_norm
    assert calls == ([] if qk_norm else [5, 70, 33, 300] + [len(full)] * steps)


def count_c_steps(monkeypatch) -> list[int]:
    """The row count of every batch the C step ran."""
    from radixserve.kernels.cpu.llama_step import LlamaCpuStep

    calls: list[int] = []
    original = LlamaCpuStep.__call__

    def counting(self, hidden, *args):
        calls.append(hidden.shape[0])
        return original(self, hidden, *args)

    monkeypatch.setattr(LlamaCpuStep, "__call__", counting)
    return calls


@pytest.mark.parametrize("page_size", [1, 4])
def test_small_mixed_batches_in_one_c_call(tiny, page_size: int, monkeypatch) -> None:
    """A decode, a continued chunk and a fresh prompt in one batch of at most 64 tokens: causal
    attention within each chunk over its cached prefix, in the C step (Llama, Qwen2)."""
    path, hf = tiny
    calls = count_c_steps(monkeypatch)
    runner = make_runner(path, page_size)
    alloc = PageAllocator(runner.kv_pool.num_pages, seed=9)
    full = prompts(10, [30, 45, 9, 20])
    cached = [29, 20, 0, 20]  # decode, chunk continuation, fresh prompt, cached whole (no rows)
    tables = [alloc.take(pages_for(len(p), page_size)) for p in full]
    for p, n, table in zip(full, cached, tables, strict=True):
        if n:
            runner.forward([RequestSlice(p[:n], 0, table)])
    slices = [
        RequestSlice(p[n:], n, table)
        for p, n, table in zip(full[:3], cached[:3], tables[:3], strict=True)
    ]
    _, logits = runner.forward(slices)
    for row, p in enumerate(full[:3]):
        diff = (logits[row] - hf_last_logits(hf, p)).abs().max().item()
        assert diff <= TOLERANCE, f"request {row}: max abs diff {diff}"
    if not runner.model.config.qk_norm:
        assert calls == [29, 20, 20, 1 + 25 + 9]


def test_a_chunk_over_a_long_prefix_runs_in_c(tiny, monkeypatch) -> None:
    """120 new tokens after 300 cached (43,260 (token, key) pairs): a C step whose attention
    blocks of 16 rows end inside their last key block at different places (each lane masked
    at its own length)."""
    path, hf = tiny
    calls = count_c_steps(monkeypatch)
    runner = make_runner(path, 16)
    alloc = PageAllocator(runner.kv_pool.num_pages, seed=11)
    (full,) = prompts(12, [420])
    table = alloc.take(pages_for(len(full), 16))
    runner.forward([RequestSlice(full[:300], 0, table)])
    _, logits = runner.forward([RequestSlice(full[300:], 300, table)])
    assert (logits[0] - hf_last_logits(hf, full)).abs().max().item() <= TOLERANCE
    assert calls == ([] if runner.model.config.qk_norm else [300, 120])


def test_the_c_decode_step_refuses_bad_indices(tiny) -> None:
    """Indices are checked before C reads or writes anything: the caches stay as they were."""
    path, _ = tiny
    runner = make_runner(path, 1)
    if runner.model.config.qk_norm:
        pytest.skip("Qwen3 keeps the module path")
    (prompt,) = prompts(8, [6])
    runner.forward([RequestSlice(prompt, 0, list(range(6)))])
    runner.forward([RequestSlice([1], 6, list(range(7)))])  # a decode step builds the C step
    from radixserve.kernels.cpu.llama_step import LlamaCpuStep
    from radixserve.runtime.model_executor.models.llama import LlamaForCausalLM

    assert isinstance(runner.model, LlamaForCausalLM)
    step = runner.model._cpu_step._step
    assert isinstance(step, LlamaCpuStep)
    before = [k.clone() for k in runner.kv_pool.k_buffers]
    hidden = torch.zeros(1, runner.model.config.hidden_size)
    good = dict(
        positions=torch.tensor([7]),
        out_slots=torch.tensor([7]),
        kv_slots=torch.arange(8).view(1, 8),
        row_seq=torch.tensor([0]),
        row_len=torch.tensor([8]),
    )
    bad = [
        ("positions", torch.tensor([10**6]), "positions"),
        ("out_slots", torch.tensor([-1]), "out_slots"),
        ("kv_slots", torch.full((1, 8), step.cache_slots), "kv_slots"),
        ("row_seq", torch.tensor([1]), "row_seq"),
        ("row_len", torch.tensor([9]), "row_len"),
        ("row_len", torch.tensor([8, 8]), "contiguous entries"),
        ("positions", torch.tensor([7], dtype=torch.int32), "int64"),
    ]
    for name, value, message in bad:
        with pytest.raises(ValueError, match=message):
            step(hidden.clone(), **{**good, name: value})
    assert all(torch.equal(a, b) for a, b in zip(before, runner.kv_pool.k_buffers, strict=True))


@pytest.mark.parametrize("threads", [2, 3])
def test_the_c_step_gives_the_same_bits_on_any_thread_count(
    tiny, threads: int, monkeypatch
) -> None:
    """Products split W's rows and attention its (row, head) units over the pool's threads
    (cut by each unit's key count); no result depends on the split: a mixed batch (two
    prefill chunks of unequal length over cached prefixes, three decodes) returns the same
    bits on one thread and on several."""
    from radixserve.kernels.cpu import small_gemm as gemm
    from radixserve.runtime.model_executor.models.llama import LlamaForCausalLM

    path, _ = tiny
    calls = count_c_steps(monkeypatch)
    # A fixed thread count: no governor re-deciding it between the two runs.
    args = ServerArgs(model_path=str(path), page_size=4, max_total_tokens=4096, device="cpu")
    runner = ModelRunner(args.replace(cpu_blas_threads=1))
    if runner.model.config.qk_norm:
        pytest.skip("Qwen3 keeps the module path")
    assert runner.blas_governor is None
    kernel = gemm.small_gemm()
    assert kernel is not None and isinstance(runner.model, LlamaForCausalLM)
    saved = int(gemm._state["threads"])  # type: ignore[arg-type]
    alloc = PageAllocator(runner.kv_pool.num_pages, seed=13)
    full = prompts(14, [40, 90, 17, 61, 33])
    cached = [39, 89, 16, 20, 2]  # three decodes, two chunks
    tables = [alloc.take(pages_for(len(p), 4)) for p in full]
    for p, n, table in zip(full, cached, tables, strict=True):
        runner.forward([RequestSlice(p[:n], 0, table)])
    slices = [
        RequestSlice(p[n:], n, table) for p, n, table in zip(full, cached, tables, strict=True)
    ]
    results = []
    try:
        for count in (1, threads):
            assert kernel.set_threads(count) == count
            calls.clear()
            _, logits = runner.forward(slices)  # rewrites the same K/V into the same slots
            assert calls == [3 + 41 + 31]
            results.append(logits)
    finally:
        gemm.set_small_gemm_threads(saved)
    assert torch.equal(results[0], results[1])
