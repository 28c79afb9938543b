"""bench_cpu_prefill end to end on the embedded model: both paths run every length, choose the
same greedy token (the benchmark exits otherwise), and both tables list every length."""

from __future__ import annotations

import re

import pytest

from benchmarks.bench_cpu_prefill import main


@pytest.mark.slow
def test_both_paths_and_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--lengths", "20", "37", "--rounds", "1"])
    out = capsys.readouterr().out
    for n in (20, 37):
        for path in ("C step", "module path"):
            assert re.search(rf"round 0 +{n} tokens +{path} +\d+\.\d\d s", out), out
    prompt_table = out.split("one prompt")[1].split("one layer")[0]
    attention_table = out.split("one layer")[1]
    for table in (prompt_table, attention_table):
        rows = re.findall(r"^ +(\d+) \|.*\| +(\d+\.\d\d)x$", table, flags=re.M)
        assert [int(n) for n, _ in rows] == [20, 37], table
        assert all(float(x) > 0 for _, x in rows)
