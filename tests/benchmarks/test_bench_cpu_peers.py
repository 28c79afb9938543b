"""bench_cpu_peers end to end against a real radixserve server on the embedded SmolLM2 GGUF
(peers left out, tiny sizes): every workload completes through the OpenAI API with the output
tokens asked for, and the server's CPU time and the wall time are measured."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from benchmarks.bench_cpu_peers import WORKLOADS, main

pytestmark = pytest.mark.slow
TINY = [
    "--rounds", "1", "--stream-tokens", "4", "--concurrent", "2", "--concurrent-tokens", "3",
    "--fewshot-questions", "2", "--fewshot-tokens", "3", "--chats", "2", "--turns", "2",
    "--chat-tokens", "3", "--long-prompts", "2", "--long-sentences", "20", "--long-tokens", "3",
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
    expected = {"stream": 4, "batch": 2 * 3, "fewshot": 2 * 3, "chat": 2 * 2 * 3, "long": 2 * 3}
    for row in rows:
        assert row["system"] == "radixserve" and row["errors"] == []
        assert row["output_tokens"] == expected[row["workload"]]  # EOS ignored: full lengths
        assert row["wall_s"] > 0 and row["tok_per_s"] > 0
        assert row["cpu_s"] > 0  # the server's process tree did the work


def test_a_terminated_run_stops_the_servers_it_started() -> None:
    """`kill` on the benchmark (SIGTERM) leaves no server behind: the servers run in their own
    sessions, so only the benchmark's own cleanup can stop them."""
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-u", "-m", "benchmarks.bench_cpu_peers", *TINY, "--no-peers"]
    command[command.index("--rounds") + 1] = "1000"  # still running when it is terminated
    bench = subprocess.Popen(
        command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert bench.stdout is not None
    seen = []
    for line in bench.stdout:  # ends early if the server fails to start (the bench says why)
        seen.append(line)
        if line.startswith("round 0"):
            break
    assert any(line.startswith("round 0") for line in seen), "".join(seen)
    servers = psutil.Process(bench.pid).children(recursive=True)
    assert servers  # the radixserve server and its workers
    bench.send_signal(signal.SIGTERM)
    bench.stdout.close()
    assert bench.wait(120) == 128 + signal.SIGTERM
    _, alive = psutil.wait_procs(servers, timeout=120)
    assert alive == [], [p.cmdline() for p in alive]
