"""bench_serving end to end against a real server on the embedded SmolLM2: a sweep of two
rates over groups sharing a system prompt through the native API, and growing chats through
the OpenAI chat API; the JSON lines are strict JSON with sane figures, and the plot is a PNG."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_serving import arrival_times, main
from tests.runtime.server.http.conftest import ServerProcess, start_server, stop_server

pytestmark = pytest.mark.slow
GSP = [
    "--dataset-name", "generated-shared-prefix", "--gsp-num-groups", "2",
    "--gsp-prompts-per-group", "2", "--gsp-system-prompt-len", "96", "--gsp-question-len", "8",
    "--gsp-output-len", "4", "--num-prompts", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    handle = start_server()
    yield handle
    stop_server(handle)


def strict_lines(path: Path) -> list[dict[str, Any]]:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def check_sane(run: dict[str, Any], num: int, output_len: int | None) -> None:
    assert run["completed"] == num and run["failed"] == 0, run["errors"]
    assert run["total_input_tokens"] > 0
    if output_len is not None:  # EOS is ignored: every request runs to its length
        assert run["total_output_tokens"] == num * output_len
    assert 0.0 <= run["cache_hit_rate"] <= 1.0
    assert run["total_cached_tokens"] <= run["total_input_tokens"]
    for name in ("ttft", "itl", "tpot", "e2e_latency"):
        stats = [run[f"{s}_{name}_ms"] for s in ("median", "p90", "p95", "p99")]
        assert all(v >= 0 for v in stats) and stats == sorted(stats), (name, stats)
    assert 0 < run["median_ttft_ms"] <= run["p99_e2e_latency_ms"]
    assert run["request_throughput"] == pytest.approx(num / run["duration"])
    assert run["output_throughput"] == pytest.approx(run["total_output_tokens"] / run["duration"])


def test_a_sweep_over_two_rates_writes_json_lines_and_a_plot(
    server: ServerProcess, tmp_path: Path
) -> None:
    out, png = tmp_path / "runs.jsonl", tmp_path / "sweep.png"
    args = ["--backend", "sglang", "--base-url", server.base_url, "--api-key", str(server.api_key)]
    args += [*GSP, "--request-rate", "4", "inf", "--max-concurrency", "1", "--flush-cache"]
    args += ["--warmup-requests", "0"]
    summaries = main([*args, "--output-file", str(out), "--plot-file", str(png), "--tag", "t"])
    runs = strict_lines(out)
    assert [r["request_rate"] for r in runs] == [4.0, "inf"]
    assert [r["request_rate"] for r in summaries] == [4.0, "inf"]
    for run in runs:
        check_sane(run, 4, 4)
        assert run["backend"] == "sglang" and run["tag"] == "t"
        assert run["model_id"] == "SmolLM2-135M-Instruct"
        # One at a time, each group's second request finds its system prompt cached.
        assert run["cache_hit_rate"] > 0.3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multi_turn_chats_grow_and_hit_the_cache_through_the_openai_chat_api(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "chat.jsonl"
    args = ["--backend", "sglang-oai-chat", "--base-url", server.base_url]
    args += ["--api-key", str(server.api_key), "--dataset-name", "multi-turn", "--num-prompts", "4"]
    args += ["--multi-turn-num-turns", "2", "--multi-turn-output-len", "8", "--request-rate", "8"]
    (run,) = main([*args, "--output-file", str(out), "--flush-cache"])
    assert strict_lines(out) == [json.loads(json.dumps(run))]
    check_sane(run, 4, 8)
    # The second turns' prompts hold the first turns' prompts and answers.
    assert run["total_cached_tokens"] > 0


def test_poisson_arrivals_have_the_asked_mean_rate() -> None:
    times = arrival_times(4000, 5.0, seed=3)
    assert times[0] == 0.0 and times == sorted(times)
    assert 4000 / times[-1] == pytest.approx(5.0, rel=0.05)
    assert arrival_times(3, float("inf"), seed=3) == [0.0, 0.0, 0.0]


def test_the_tokenizer_path_a_server_reports_loads(tmp_path: Path) -> None:
    """/model_info's tokenizer_path of a GGUF model is its converted tokenizer directory (no
    config.json): it loads as a tokenizer, the same one the model's own path gives."""
    from benchmarks.bench_serving import load_tokenizer
    from radixserve.runtime.config.model_source import resolve_model_source
    from radixserve.runtime.config.tokenizer import tokenizer_directory

    source = resolve_model_source(None)
    directory = tokenizer_directory(source)
    assert source.gguf_path is not None and directory != source.directory
    text = "Question: What is the capital of France?\nAnswer:"
    expected = load_tokenizer(source.gguf_path, str(tmp_path)).encode(text)
    assert load_tokenizer(directory, str(tmp_path)).encode(text) == expected
