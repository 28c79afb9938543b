"""bench_cpu_peers end to end against a real radixserve server on the embedded SmolLM2 GGUF
(peers left out, tiny sizes): every workload completes through the OpenAI API with the output
tokens asked for, and the server's CPU time and the wall time are measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_cpu_peers import WORKLOADS, main

pytestmark = pytest.mark.slow
TINY = [
    "--rounds", "1", "--stream-tokens", "4", "--concurrent", "2", "--concurrent-tokens", "3",
    "--fewshot-questions", "2", "--fewshot-tokens", "3", "--chats", "2", "--turns", "2",
    "--chat-tokens", "3",
]  # fmt: skip


def test_radixserve_alone_runs_every_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.json"
    rows = main([*TINY, "--no-peers", "--json-out", str(out)])
    printed = capsys.readouterr().out
    assert "llama.cpp server: not run (--no-peers)" in printed
    assert json.loads(out.read_text()) == rows
    assert [r["workload"] for r in rows] == list(WORKLOADS)
    expected = {"stream": 4, "batch": 2 * 3, "fewshot": 2 * 3, "chat": 2 * 2 * 3}
    for row in rows:
        assert row["system"] == "radixserve" and row["errors"] == []
        assert row["output_tokens"] == expected[row["workload"]]  # EOS ignored: full lengths
        assert row["wall_s"] > 0 and row["tok_per_s"] > 0
        assert row["cpu_s"] > 0  # the server's process tree did the work
