"""Tensor parallelism on the CPU: two ranks over gloo give the logits and the greedy outputs
of one rank, and a lost worker rank is a clear error.

Rank 0 runs in the test process (as it runs in the scheduler's process); rank 1 is a worker
subprocess started by `TensorParallelRunner`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.distributed import tp_group
from radixserve.runtime.model_executor.model_runner import ModelRunner
from radixserve.runtime.model_executor.tp_worker import (
    TensorParallelRunner,
    WorkerLostError,
    create_model_runner,
)
from radixserve.runtime.scheduler.step import RequestSlice
from tests.runtime.tiny_models import TINY_KINDS, build_tiny_model

TOLERANCE = 1e-4


def tiny_args(path: Path, tp_size: int) -> ServerArgs:
    return ServerArgs(
        model_path=str(path),
        device="cpu",
        page_size=4,
        max_total_tokens=2048,
        tp_size=tp_size,
    )


def mixed_step(runner, seed: int) -> torch.Tensor:
    """Two prompts prefilled, then a mixed step: two decodes and a fresh prompt."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(320) for _ in range(n)] for n in (7, 30, 19)]
    tables = [list(range(i * 16, i * 16 + 16)) for i in range(3)]
    runner.forward([RequestSlice(p[:-1], 0, t) for p, t in zip(prompts[:2], tables, strict=False)])
    _, logits = runner.forward(
        [
            RequestSlice(prompts[0][-1:], len(prompts[0]) - 1, tables[0]),
            RequestSlice(prompts[1][-1:], len(prompts[1]) - 1, tables[1]),
            RequestSlice(prompts[2], 0, tables[2]),
        ]
    )
    return logits.clone()


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_two_ranks_give_the_logits_of_one(kind: str, tmp_path: Path) -> None:
    path = build_tiny_model(kind, tmp_path)
    one_rank = ModelRunner(tiny_args(path, 1))
    reference = mixed_step(one_rank, seed=1)
    runner = create_model_runner(tiny_args(path, 2))
    try:
        assert isinstance(runner, TensorParallelRunner)
        assert tp_group().size == 2
        # Rank 0 holds half of the query heads and (GQA, 2 KV heads) one KV head.
        attn = runner.runner.model.layers[0].self_attn
        assert (attn.num_heads, attn.num_kv_heads) == (2, 1)
        geometry = runner.runner.model.attention_geometry
        assert (geometry.num_heads, geometry.num_kv_heads) == (2, 1)
        # What the scheduler's process reads (the StepRunner seam) is rank 0's, and the same as
        # one rank's (max_total_tokens fixes the pool's pages whatever a rank's share of heads).
        seam = ("context_len", "vocab_size", "num_kv_pages", "model_name")
        assert [getattr(runner, name) for name in seam] == [
            getattr(one_rank, name) for name in seam
        ]
        logits = mixed_step(runner, seed=1)
    finally:
        runner.shutdown()
    assert tp_group().size == 1
    assert logits.shape == reference.shape
    assert (logits - reference).abs().max().item() <= TOLERANCE


@pytest.fixture
def tiny_with_tokenizer(tmp_path: Path) -> Path:
    """The tiny Llama with SmolLM2's tokenizer beside it (ids < 320 decode to text)."""
    from radixserve.runtime.config.model_source import resolve_model_source
    from radixserve.runtime.config.tokenizer import load_tokenizer

    path = build_tiny_model("llama", tmp_path)
    load_tokenizer(resolve_model_source(None)).save_pretrained(path)
    return path


def test_engine_with_two_ranks_generates_what_one_rank_does(tiny_with_tokenizer: Path) -> None:
    from radixserve import Engine

    rng = random.Random(2)
    prompts = [[rng.randrange(320) for _ in range(n)] for n in (5, 12, 40, 3)]
    params = {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True}
    outputs = {}
    # Overlap scheduling under tensor parallelism: rank 0 broadcasts its samples for the
    # workers to resolve the placeholder inputs.
    for tp_size, overlap in ((1, False), (2, False), (2, True)):
        engine = Engine(
            model_path=str(tiny_with_tokenizer),
            device="cpu",
            page_size=4,
            max_total_tokens=2048,
            tp_size=tp_size,
            disable_overlap_schedule=not overlap,
        )
        try:
            outputs[tp_size, overlap] = [
                o["output_ids"] for o in engine.generate(input_ids=prompts, sampling_params=params)
            ]
            assert (engine.scheduler.counters.overlapped_steps > 0) == overlap
        finally:
            engine.shutdown()
    assert outputs[2, False] == outputs[1, False]
    assert outputs[2, True] == outputs[1, False]
    assert all(len(ids) == 12 for ids in outputs[2, False])


def test_a_lost_worker_is_a_clear_error(tiny_with_tokenizer: Path) -> None:
    runner = TensorParallelRunner(tiny_args(tiny_with_tokenizer, 2))
    try:
        runner.workers[0].kill()
        runner.workers[0].wait()
        with pytest.raises(WorkerLostError, match="worker"):
            runner.forward([RequestSlice([1, 2, 3], 0, [0])])
    finally:
        runner.shutdown()
    assert tp_group().size == 1


def test_bad_tp_sizes_are_refused(tmp_path: Path) -> None:
    path = build_tiny_model("llama", tmp_path)
    with pytest.raises(ValueError, match="tp_size must be >= 1"):
        create_model_runner(tiny_args(path, 0))


def test_server_with_two_ranks_answers_and_leaves_no_worker(tiny_with_tokenizer: Path) -> None:
    """`launch_server --tp-size 2`: the scheduler process starts rank 1; it answers through the
    HTTP API and is gone after SIGTERM."""
    import httpx

    from tests.runtime.server.http.conftest import alive, children_of, start_server, stop_server

    server = start_server(
        "--model-path", str(tiny_with_tokenizer), "--tp-size", "2", "--page-size", "4", api_key=None
    )
    try:
        scheduler_children = [pid for child in server.child_pids() for pid in children_of(child)]
        assert any(
            "radixserve.runtime.model_executor.tp_worker" in _cmdline(pid)
            for pid in scheduler_children
        )
        body = {
            "input_ids": [1, 2, 3, 4],
            "sampling_params": {"max_new_tokens": 5, "ignore_eos": True},
        }
        reply = httpx.post(f"{server.base_url}/generate", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["meta_info"]["completion_tokens"] == 5
    finally:
        assert stop_server(server) == 0, server.log_tail()
    # The worker dies by PR_SET_PDEATHSIG when its scheduler exits: asynchronously, so give its
    # SIGKILL a moment to land rather than racing it.
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in scheduler_children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in scheduler_children)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
