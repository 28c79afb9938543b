"""bench_offline_throughput end to end on the CPU: a tiny dummy Llama shape, a few prompts of
each dataset; SGLang's summary fields on stdout and its JSON line in --result-filename."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_offline_throughput import main
from tests.benchmarks.test_throughput_datasets import conversation, write_sharegpt

SUMMARY_LABELS = (
    "Backend:",
    "Successful requests:",
    "Benchmark duration (s):",
    "Total input tokens:",
    "Total generated tokens:",
    "Last generation throughput (tok/s):",
    "Request throughput (req/s):",
    "Input token throughput (tok/s):",
    "Output token throughput (tok/s):",
    "Total token throughput (tok/s):",
)
SGLANG_KEYS = (
    "backend",
    "successful_requests",
    "total_latency",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "input_throughput",
    "output_throughput",
    "total_throughput",
    "last_gen_throughput",
)
TINY = ["--model-path", "tiny-llama-shape", "--load-format", "dummy", "--device", "cpu"]


def summary(stdout: str) -> dict[str, str]:
    """The table's label -> value, read back from what was printed."""
    block = stdout.split(" Offline Throughput Benchmark Result ")[1].split("=" * 50)[0]
    rows = {}
    for line in block.strip("=\n").splitlines():
        label, _, value = line.partition(":")
        rows[label + ":"] = value.strip()
    return rows


def test_random_dataset_prints_sglangs_summary_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.jsonl"
    args = [*TINY, "--dataset-name", "random", "--num-prompts", "6", "--random-input-len", "48"]
    args += ["--random-output-len", "12", "--result-filename", str(out)]
    result = main(args)
    printed = capsys.readouterr().out
    table = summary(printed)
    assert tuple(table) == SUMMARY_LABELS
    assert table["Backend:"] == "engine" and table["Successful requests:"] == "6"
    # EOS ignored: every request runs to its drawn length, and the totals are the draws'.
    assert int(table["Total generated tokens:"]) == result["total_output_tokens"]
    assert float(table["Output token throughput (tok/s):"]) > 0
    assert float(table["Last generation throughput (tok/s):"]) > 0
    line = json.loads(out.read_text().splitlines()[0])
    assert all(key in line for key in SGLANG_KEYS)
    assert line["total_output_tokens"] == result["total_output_tokens"]
    assert line["total_throughput"] == pytest.approx(
        (line["total_input_tokens"] + line["total_output_tokens"]) / line["total_latency"]
    )
    assert (line["model_path"], line["dataset_name"]) == ("tiny-llama-shape", "random")
    # The per-step breakdown: parts within the step's wall time, a busy share in [0, 1].
    steps = line["step_breakdown"]
    assert 0 < steps["build_ms_median"] <= steps["wall_ms_median"]
    assert 0 < steps["gpu_busy_p90_steps_at_least"] <= steps["gpu_busy_median"] <= 1
    assert 0 <= steps["steps_at_least_99pct_busy"] <= 1
    assert "GPU busy:" in printed
    # CPU defaults resolved by the runtime.
    assert (line["max_running_requests"], line["chunked_prefill_size"]) == (256, 2048)
    # The same seed draws the same request set: a second run appends an equal workload.
    main([*args, "--skip-warmup"])
    second = json.loads(out.read_text().splitlines()[1])
    assert second["total_input_tokens"] == line["total_input_tokens"]
    assert second["total_output_tokens"] == line["total_output_tokens"]


def test_server_flags_reach_the_engine(tmp_path: Path) -> None:
    result = main(
        [*TINY, "--dataset-name", "generated-shared-prefix", "--gsp-num-groups", "2"]
        + ["--gsp-prompts-per-group", "3", "--gsp-system-prompt-len", "64"]
        + ["--gsp-question-len", "8", "--gsp-output-len", "5", "--skip-warmup"]
        + ["--max-running-requests", "2", "--chunked-prefill-size", "32"]
    )
    assert (result["max_running_requests"], result["chunked_prefill_size"]) == (2, 32)
    assert result["successful_requests"] == 6
    assert (result["total_input_tokens"], result["total_output_tokens"]) == (6 * 72, 6 * 5)


def test_sharegpt_from_a_dataset_path(tmp_path: Path) -> None:
    records = [conversation("w5 w6 w7 what is this", "w1 w2 w3 w4 w9") for _ in range(4)]
    path = write_sharegpt(tmp_path / "sharegpt.json", records, cut_tail=True)
    result = main([*TINY, "--dataset-name", "sharegpt", "--dataset-path", str(path)])
    assert result["successful_requests"] == 4
    assert (result["total_input_tokens"], result["total_output_tokens"]) == (4 * 6, 4 * 5)


def test_a_shape_needs_dummy_weights(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--model-path", "tiny-llama-shape", "--dataset-name", "random"])
    assert "add --load-format dummy" in capsys.readouterr().err
