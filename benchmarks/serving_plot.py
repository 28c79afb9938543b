"""Latency percentiles against request rate, from bench_serving's JSON lines, as a small PNG.

    python benchmarks/serving_plot.py --input "radix on=on.jsonl" --input "radix off=off.jsonl" \
        --output docs/bench/gsp.png --title "generated-shared-prefix, SmolLM2 on the CPU"

Four panels: TTFT, ITL and end-to-end latency (median solid, p90 dashed, p99 dotted) and the
output token throughput, one colour per input file. bench_serving draws the same plot for one
sweep with `--plot-file`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PANELS = (
    ("ttft", "TTFT (ms)"),
    ("itl", "inter-token latency (ms)"),
    ("e2e_latency", "end-to-end latency (ms)"),
)
STYLES = (("median", "-"), ("p90", "--"), ("p99", ":"))


def read_runs(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def rate_positions(rates: Sequence[float]) -> tuple[dict[float, float], list[float], list[str]]:
    """x positions: finite rates as they are, `inf` one step past the largest."""
    finite = sorted({r for r in rates if math.isfinite(r)})
    inf_x = (finite[-1] * 1.5 if finite else 1.0) if any(math.isinf(r) for r in rates) else None
    where = {r: r for r in finite}
    ticks, labels = list(finite), [f"{r:g}" for r in finite]
    if inf_x is not None:
        where[math.inf] = inf_x
        ticks.append(inf_x)
        labels.append("inf")
    return where, ticks, labels


def plot(series: dict[str, list[dict[str, Any]]], output: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_rates = [float(run["request_rate"]) for runs in series.values() for run in runs]
    where, ticks, labels = rate_positions(all_rates)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=80)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, runs), colour in zip(series.items(), colours, strict=False):
        runs = sorted(runs, key=lambda r: where[float(r["request_rate"])])
        xs = [where[float(r["request_rate"])] for r in runs]
        for ax, (metric, ylabel) in zip(axes.flat, PANELS, strict=False):
            for stat, style in STYLES:
                ys = [r[f"{stat}_{metric}_ms"] for r in runs]
                ax.plot(
                    xs, ys, style, color=colour, marker="o", markersize=3, label=f"{name} {stat}"
                )
            ax.set_ylabel(ylabel)
        axes.flat[3].plot(
            xs,
            [r["output_throughput"] for r in runs],
            "-",
            color=colour,
            marker="o",
            markersize=3,
            label=name,
        )
    axes.flat[3].set_ylabel("output tokens/s")
    for ax in axes.flat:
        ax.set_xticks(ticks, labels)
        ax.set_xlabel("request rate (req/s)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    axes.flat[3].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="LABEL=FILE",
        help="a bench_serving --output-file and its legend label (repeatable)",
    )
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    series = {}
    for item in args.input:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--input {item!r}: write LABEL=FILE")
        series[label] = read_runs(path)
    plot(series, args.output, args.title)


if __name__ == "__main__":
    main()
