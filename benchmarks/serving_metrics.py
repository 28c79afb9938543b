"""bench_serving's summary: throughput, latency percentiles and the cache hit share, under
SGLang's field names (`mean_ttft_ms`, `p99_itl_ms`, `request_throughput`, ...).

    TTFT   time to the first chunk with text
    ITL    gaps between later chunks (every gap of every request)
    TPOT   per request, (latency - TTFT) / (output tokens - 1); requests of one token have none
    E2E    per request, sending to the last chunk

Each gets mean, median, std, p90, p95 and p99 in milliseconds. The cache hit share is the
prompt tokens the server reports as cached over all prompt tokens it reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.serving_backends import RequestResult

PERCENTILES = (90, 95, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e_latency")


def latency_fields(name: str, seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=float) * 1000 if len(seconds) else np.zeros(1)
    fields = {
        f"mean_{name}_ms": float(ms.mean()),
        f"median_{name}_ms": float(np.median(ms)),
        f"std_{name}_ms": float(ms.std()),
    }
    fields.update({f"p{p}_{name}_ms": float(np.percentile(ms, p)) for p in PERCENTILES})
    return fields


def summarize(results: Sequence[RequestResult], duration: float) -> dict[str, Any]:
    done = [r for r in results if r.success]
    ttfts = [r.ttft or r.latency for r in done]  # no text at all: the first chunk is the end
    tpots = [(r.latency - r.ttft) / (r.output_len - 1) for r in done if r.output_len > 1 and r.ttft]
    itls = [gap for r in done for gap in r.itl]
    e2e = [r.latency for r in done]
    total_input = sum(r.prompt_len for r in done)
    total_output = sum(r.output_len for r in done)
    cached = sum(r.cached_tokens for r in done)
    summary: dict[str, Any] = {
        "completed": len(done),
        "failed": len(results) - len(done),
        "errors": sorted({r.error for r in results if not r.success})[:5],
        "duration": duration,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "total_cached_tokens": cached,
        "cache_hit_rate": cached / total_input if total_input else 0.0,
        "request_throughput": len(done) / duration,
        "input_throughput": total_input / duration,
        "output_throughput": total_output / duration,
        "total_throughput": (total_input + total_output) / duration,
        # Little's law: the mean number of requests in flight.
        "concurrency": sum(e2e) / duration,
    }
    for name, values in zip(LATENCIES, (ttfts, tpots, itls, e2e), strict=True):
        summary.update(latency_fields(name, values))
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print("\n{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=60, c="="))
    rows = [
        ("Backend:", summary["backend"]),
        ("Dataset:", summary["dataset_name"]),
        ("Traffic request rate:", summary["request_rate"]),
        ("Max request concurrency:", summary["max_concurrency"] or "not set"),
        ("Successful requests:", summary["completed"]),
        ("Failed requests:", summary["failed"]),
        ("Benchmark duration (s):", f"{summary['duration']:.2f}"),
        ("Total input tokens:", summary["total_input_tokens"]),
        ("Total generated tokens:", summary["total_output_tokens"]),
        ("Cached prompt tokens:", summary["total_cached_tokens"]),
        ("Cache hit share:", f"{summary['cache_hit_rate']:.1%}"),
        ("Request throughput (req/s):", f"{summary['request_throughput']:.2f}"),
        ("Input token throughput (tok/s):", f"{summary['input_throughput']:.2f}"),
        ("Output token throughput (tok/s):", f"{summary['output_throughput']:.2f}"),
        ("Concurrency:", f"{summary['concurrency']:.2f}"),
    ]
    for label, value in rows:
        print(f"{label:<40} {value!s:<10}")
    titles = {"e2e_latency": "End-to-End Latency", "ttft": "Time to First Token"}
    titles.update(tpot="Time per Output Token (excl. 1st token)", itl="Inter-Token Latency")
    for name in LATENCIES:
        print("{s:{c}^{n}}".format(s=titles[name], n=60, c="-"))
        for stat in ("mean", "median", *(f"p{p}" for p in PERCENTILES)):
            print(
                f"{stat.capitalize() + ' ' + name.upper() + ' (ms):':<40} "
                f"{summary[f'{stat}_{name}_ms']:<10.2f}"
            )
    if summary["errors"]:
        print("Errors:", *summary["errors"], sep="\n  ")
    print("=" * 60)
