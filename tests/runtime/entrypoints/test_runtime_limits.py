"""The batch limits reach the scheduler and the decode graphs: unset flags stay None on the
command line and resolve against the model runner's KV pool (config/limits.py); set ones pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from radixserve.runtime.config.limits import resolve_limits
from radixserve.runtime.config.model_source import resolve_model_source
from radixserve.runtime.config.tokenizer import gguf_tokenizer_dir
from radixserve.runtime.entrypoints.engine import Engine
from radixserve.runtime.entrypoints.launch_server import parse_args
from tests.runtime.tiny_models import build_tiny_model


def test_unset_flags_stay_none_until_the_pool_is_known() -> None:
    args = parse_args([])
    assert (args.max_running_requests, args.chunked_prefill_size, args.cuda_graph_max_bs) == (
        None,
        None,
        None,
    )
    args = parse_args(["--max-running-requests", "1024", "--chunked-prefill-size", "8192"])
    assert (args.max_running_requests, args.chunked_prefill_size) == (1024, 8192)


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    # Any tokenizer decodes the tiny model's ids (< 320); SmolLM2's is converted once and cached.
    gguf_path = resolve_model_source(None).gguf_path
    assert gguf_path is not None
    return gguf_tokenizer_dir(gguf_path)


def scheduler_limits(engine: Engine) -> tuple[int, int]:
    config = engine.scheduler.config
    return config.max_running_requests, config.chunked_prefill_size


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, (256, 2048)), ({"max_running_requests": 3, "chunked_prefill_size": 16}, (3, 16))],
)
def test_cpu_engine_schedules_with_the_resolved_limits(
    tmp_path: Path, tokenizer_dir: str, options: dict, expected: tuple[int, int]
) -> None:
    model = build_tiny_model("llama", tmp_path)
    engine = Engine(
        str(model), tokenizer_path=tokenizer_dir, device="cpu", max_total_tokens=512, **options
    )
    try:
        assert scheduler_limits(engine) == expected
        # Three at a time at most, 16-token chunks: every request still finishes.
        prompts = [[(5 * i + j) % 320 for j in range(40)] for i in range(5)]
        greedy = {"temperature": 0, "max_new_tokens": 4, "ignore_eos": True}
        outs = engine.generate(input_ids=prompts, sampling_params=greedy)
        assert [o["meta_info"]["completion_tokens"] for o in outs] == [4] * 5
    finally:
        engine.shutdown()


@pytest.mark.gpu
def test_gpu_engine_derives_limits_from_its_pool(tmp_path: Path) -> None:
    from benchmarks.dummy_model import write_dummy_model_dir

    model = build_tiny_model("llama", tmp_path, head_dim=64)
    # A word-level tokenizer of the tiny shape: the lease has no SmolLM2 to take one from.
    tokenizer_dir = str(write_dummy_model_dir("tiny-llama-shape", tmp_path / "tokenizer"))
    engine = Engine(
        str(model), tokenizer_path=tokenizer_dir, device="cuda", max_total_tokens=40_000
    )
    try:
        runner = engine.state.runner
        pool_tokens = runner.num_kv_pages * engine.args.page_size
        expected = resolve_limits(
            engine.args,
            pool_tokens=pool_tokens,
            context_len=runner.context_len,
            gpu_memory_bytes=torch.cuda.get_device_properties(0).total_memory,
        )
        # 40,000 pool tokens over a 512-token context: capped at 4096, under pool / 2.
        assert expected.max_running_requests == 4096
        assert engine.state.limits == expected
        assert scheduler_limits(engine) == (4096, expected.chunked_prefill_size)
        graphs = runner.decode_graphs  # type: ignore[attr-defined]
        if graphs is not None:
            assert graphs.max_bs == expected.cuda_graph_max_bs
    finally:
        engine.shutdown()


def test_a_shut_down_engine_is_collected(tmp_path: Path, tokenizer_dir: str) -> None:
    """The Engine freezes the process's objects at start-up (gc_tuning); shutting it down hands
    them back, so its model and KV pool go with the last reference (a second GPU Engine in the
    same process found the first one's memory still taken)."""
    import gc
    import weakref

    model = build_tiny_model("llama", tmp_path)
    engine = Engine(str(model), tokenizer_path=tokenizer_dir, device="cpu", max_total_tokens=512)
    pool = weakref.ref(engine.state.runner)
    engine.generate(input_ids=[[5, 6, 7]], sampling_params={"max_new_tokens": 2})
    engine.shutdown()
    del engine
    gc.collect()
    assert pool() is None
    assert gc.get_freeze_count() == 0


@pytest.mark.gpu
def test_a_shut_down_gpu_engine_frees_its_memory(tmp_path: Path) -> None:
    """With decode graphs and overlap on: after shutdown and the last reference, the device
    memory the Engine reserved (weights, KV pool, graph pools, workspaces) is free again."""
    import gc
    import json
    import weakref

    from benchmarks.dummy_model import write_dummy_model_dir

    # The tiny shape (its own word-level tokenizer: the lease has no SmolLM2) with 64-wide
    # heads, so FlashInfer and its decode graphs run.
    model = write_dummy_model_dir("tiny-llama-shape", tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["hidden_size"] = 4 * 64
    (model / "config.json").write_text(json.dumps(config))
    gc.collect()
    torch.cuda.empty_cache()
    free_before, _ = torch.cuda.mem_get_info()
    engine = Engine(str(model), load_format="dummy", device="cuda", max_total_tokens=400_000)
    assert engine.state.runner.decode_graphs is not None  # type: ignore[attr-defined]
    engine.generate(input_ids=[[5, 6, 7]] * 4, sampling_params={"max_new_tokens": 4})
    runner = weakref.ref(engine.state.runner)
    engine.shutdown()
    del engine
    gc.collect()
    alive = runner()
    holders = [type(r).__name__ for r in gc.get_referrers(alive)] if alive is not None else []
    del alive
    assert runner() is None, f"the model runner is still referenced by {holders}"
    torch.cuda.empty_cache()
    free_after, _ = torch.cuda.mem_get_info()
    assert free_before - free_after < 256 * 2**20, (free_before, free_after)
