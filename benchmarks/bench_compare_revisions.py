"""Runs benchmarks on an earlier revision and on this checkout, interleaved, in one run.

    python benchmarks/bench_compare_revisions.py --base 36fac94 [--rounds 3]
        [--only bench_radix_cache.py] [--radix-args '--page-size 1 --traces multi-turn ...']

The base revision is unpacked with `git archive` into a temporary folder (nothing in this
checkout changes) with its own `radixserve` import root, so each side imports its own code.
Rounds alternate base and head, so a busy machine slows both alike; each figure is the best
(lowest) over the rounds. Compared: `bench_scheduler_overhead.py` (scheduler CPU time per step at
256 running requests) and `bench_radix_cache.py` (match and insert latency and whole-replay time
per trace, cache and page size; the 2,000-token match microbenchmark).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

HEAD = Path(__file__).resolve().parent.parent
FOLDERS = ("runtime", "radix_cache", "kernels", "frontend_lang", "utils")
BENCHMARKS: dict[str, list[str]] = {
    "bench_scheduler_overhead.py": ["--steps", "300"],
    "bench_radix_cache.py": ["--repeats", "3"],
}
Figures = dict[str, float]


@dataclass(slots=True)
class Tree:
    name: str
    root: Path  # holds benchmarks/
    import_root: Path  # holds a `radixserve` package whose subpackages are the root's folders


def unpack_base(revision: str, into: Path) -> Tree:
    archive = subprocess.run(
        ["git", "-C", str(HEAD), "archive", "--format=tar", revision],
        capture_output=True,
        check=True,
    ).stdout
    root = into / "base"
    root.mkdir()
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(root, filter="tar")
    # Before the restructuring, `radixserve.<folder>` resolved only through the install's package
    # mapping: build the same mapping with symlinks.
    package = into / "import_root" / "radixserve"
    package.mkdir(parents=True)
    for item in (root / "radixserve").iterdir():
        if item.suffix == ".py":
            (package / item.name).write_bytes(item.read_bytes())
    for folder in FOLDERS:
        if (root / folder).is_dir() and not (package / folder).exists():
            (package / folder).symlink_to(root / folder)
    return Tree(f"base {revision}", root, into / "import_root")


def run_benchmark(tree: Tree, script: str, extra: list[str] | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree.import_root)}
    command = [
        sys.executable,
        str(tree.root / "benchmarks" / script),
        *BENCHMARKS[script],
        *(extra or []),
    ]
    done = subprocess.run(command, cwd=tree.root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed on {tree.name}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def parse(script: str, output: str) -> Figures:
    figures: Figures = {}
    if script == "bench_scheduler_overhead.py":
        found = re.search(r"median ([\d.]+) ms \| p99 ([\d.]+) ms", output)
        if found:
            figures["scheduler step median ms"] = float(found.group(1))
            figures["scheduler step p99 ms"] = float(found.group(2))
        return figures
    section = ""
    for line in output.splitlines():
        head = re.match(r"(\S+): \d+ requests, .* page size (\d+),", line)
        if head:
            section = f"{head.group(1)} ps{head.group(2)}"
            continue
        cells = line.split()
        if section and len(cells) == 9 and cells[0] in ("radix", "block_hash", "naive"):
            name = f"{section} {cells[0]}"
            figures[f"{name} match p50 us"] = float(cells[1])
            figures[f"{name} insert p50 us"] = float(cells[3])
            figures[f"{name} replay s"] = float(cells[8])
        per_call = re.match(
            r"\s+(\S+) per call: insert mean ([\d.]+) us .* evict p50 ([\d.]+) us mean ([\d.]+) us",
            line,
        )
        if section and per_call:
            name = f"{section} {per_call.group(1)}"
            figures[f"{name} insert mean us"] = float(per_call.group(2))
            figures[f"{name} evict p50 us"] = float(per_call.group(3))
            figures[f"{name} evict mean us"] = float(per_call.group(4))
        micro = re.search(r"page size (\d+): radix median ([\d.]+) us", line)
        if micro:
            figures[f"match 2k-token prompt ps{micro.group(1)} radix us"] = float(micro.group(2))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a commit or tag)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", choices=sorted(BENCHMARKS), help="run one of the benchmarks, not all"
    )
    parser.add_argument(
        "--radix-args",
        default="",
        help="more flags for bench_radix_cache.py, e.g. "
        "'--page-size 1 --traces multi-turn --pool-fraction 0.3'",
    )
    args = parser.parse_args()
    scripts = [args.only] if args.only else list(BENCHMARKS)
    extra = {"bench_radix_cache.py": args.radix_args.split()}
    best: dict[str, dict[str, float]] = defaultdict(dict)  # tree name -> figure -> best
    with tempfile.TemporaryDirectory(prefix="radixserve-compare-") as tmp:
        trees = [unpack_base(args.base, Path(tmp)), Tree("head", HEAD, HEAD)]
        for round_index in range(args.rounds):
            for tree in trees if round_index % 2 == 0 else reversed(trees):
                for script in scripts:
                    print(f"round {round_index + 1}: {script} on {tree.name}", flush=True)
                    output = run_benchmark(tree, script, extra.get(script))
                    for name, value in parse(script, output).items():
                        previous = best[tree.name].get(name, float("inf"))
                        best[tree.name][name] = min(previous, value)
    base, head = (best[t.name] for t in trees)
    names = [n for n in base if n in head]
    width = max(map(len, names))
    print(f"\nbest of {args.rounds} interleaved rounds; ratio < 1 means the head is faster")
    print(f"{'figure':<{width}} {'base':>10} {'head':>10} {'head/base':>10}")
    for name in names:
        ratio = head[name] / base[name] if base[name] else float("nan")
        print(f"{name:<{width}} {base[name]:>10.3f} {head[name]:>10.3f} {ratio:>10.2f}")


if __name__ == "__main__":
    main()
