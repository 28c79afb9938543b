"""bench_hierarchical_cache end to end on the CPU with a tiny dummy Llama shape: both modes run
the same sessions, the tier-on run computes fewer prefill tokens and reports host hits, and the
table comes last."""

from __future__ import annotations

import pytest

from benchmarks.bench_hierarchical_cache import main

TINY = ["--model-path", "tiny-llama-shape", "--load-format", "dummy", "--device", "cpu"]
SMALL = ["--sessions", "4", "--turns", "3", "--system-len", "64", "--task-len", "32"]
SMALL += ["--user-len", "32", "--output-len", "8", "--page-size", "4", "--skip-warmup"]


def test_tier_on_computes_less_and_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    off, on = main([*TINY, *SMALL])
    assert (off.mode, on.mode) == ("tier off", "tier on")
    assert off.prompt_tokens == on.prompt_tokens > 0
    assert on.prefill_tokens < off.prefill_tokens
    assert on.host_hit_tokens > 0 and on.load_back_tokens > 0 and on.write_back_tokens > 0
    assert off.host_hit_tokens == off.load_back_tokens == 0
    assert on.hit_share > off.hit_share
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("tier on: ") and "fewer prefill tokens" in lines[-1]
    header = next(i for i, line in enumerate(lines) if line.startswith("mode "))
    assert lines[header + 1].startswith("tier off") and lines[header + 2].startswith("tier on")
    # The step counts per mode: both ran steps (no step idles on the CPU, where copies are done
    # when load_back returns).
    steps = [line.split() for line in lines[-3:-1]]
    assert [s[:2] for s in steps] == [["tier", "off"], ["tier", "on"]]
    assert all(int(s[2].replace(",", "")) > 0 and s[4] == "0" for s in steps)
    assert on.steps > 0 and on.idle_steps == 0
