"""Offline throughput through `radixserve.Engine`, with SGLang's flags and summary fields.

It takes SGLang's `bench_offline_throughput` flags (`--dataset-name random|sharegpt|
generated-shared-prefix`, `--num-prompts`, `--random-input-len`, `--random-output-len`,
`--random-range-ratio`, `--gsp-*`, `--seed`, `--result-filename`, ...) plus every server flag
(`--model-path`, `--load-format dummy`, `--max-running-requests`, `--chunked-prefill-size`,
`--cuda-graph-max-bs`, ...), which go to the Engine. Every request is sent as token ids in one
`generate` call, greedy, EOS ignored (unless `--disable-ignore-eos`), after a warm-up batch; the
summary table and the JSON line (appended to `--result-filename`) carry SGLang's field names, so
the figures line up with SGLang's.

`--model-path` may name a shape (llama-3.1-8b-shape, tiny-llama-shape) with `--load-format
dummy`: a model directory with that config and a word-level tokenizer is written to a temporary
folder (benchmarks/dummy_model.py).

    # SGLang's CI random workload, on the GPU
    python3 benchmarks/bench_offline_throughput.py --model-path llama-3.1-8b-shape \
        --load-format dummy --dataset-name random --num-prompts 500 \
        --random-input-len 4096 --random-output-len 2048
    # a CPU smoke run
    python3 benchmarks/bench_offline_throughput.py --model-path tiny-llama-shape \
        --load-format dummy --dataset-name random --num-prompts 8 --random-input-len 64 \
        --random-output-len 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_cli import add_dataclass_flags, run_on_model, split_args  # noqa: E402
from benchmarks.throughput_datasets import (  # noqa: E402
    DatasetFlags,
    DatasetRow,
    sample_generated_shared_prefix,
    sample_random,
    sample_sharegpt,
    sharegpt_file,
)
from radixserve.runtime.config.server_args import ServerArgs  # noqa: E402
from radixserve.runtime.entrypoints.engine import Engine  # noqa: E402
from radixserve.runtime.entrypoints.launch_server import build_parser  # noqa: E402
from radixserve.runtime.wire.messages import TokenOut  # noqa: E402
from radixserve.runtime.wire.stats import StepStats  # noqa: E402

DATASETS = ("sharegpt", "random", "generated-shared-prefix")
# SGLang's warm-up: up to 16 requests of 256 prompt and 16 new tokens.
WARMUP_PROMPTS, WARMUP_INPUT_LEN, WARMUP_OUTPUT_LEN = 16, 256, 16
# SGLang logs its generation throughput over 40 decode steps; the last such window is reported.
LAST_GEN_WINDOW_STEPS = 40


@dataclass(slots=True)
class BenchArgs(DatasetFlags):
    """SGLang's benchmark flags (names and defaults), those that apply to one Engine."""

    backend: str = "engine"
    result_filename: str = ""
    disable_ignore_eos: bool = False
    extra_request_body: str | None = None
    skip_warmup: bool = False


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    """BenchArgs' fields as flags; the generated-shared-prefix ones also under SGLang's older
    `--gen-*` names."""
    add_dataclass_flags(
        parser,
        BenchArgs,
        "benchmark (SGLang's bench_offline_throughput flags)",
        choices={"backend": ["engine"], "dataset_name": list(DATASETS)},
        aliases=lambda flag: (
            [flag.replace("--gsp-", "--gen-")] if flag.startswith("--gsp-") else []
        ),
    )


def sample_requests(
    bench: BenchArgs, engine: Engine, rng: np.random.RandomState
) -> list[DatasetRow]:
    vocab = engine.builder.vocab_size
    shuffle = random.Random(bench.seed)
    if bench.dataset_name == "random":
        return sample_random(
            bench.num_prompts,
            bench.random_input_len,
            bench.random_output_len,
            bench.random_range_ratio,
            vocab,
            rng,
        )
    if bench.dataset_name == "generated-shared-prefix":
        return sample_generated_shared_prefix(
            bench.gsp_num_groups,
            bench.gsp_prompts_per_group,
            bench.gsp_system_prompt_len,
            bench.gsp_question_len,
            bench.gsp_output_len,
            bench.gsp_range_ratio,
            vocab,
            rng,
            shuffle,
        )
    # Rows longer than the model's context are skipped (the Engine refuses such prompts).
    context = bench.sharegpt_context_len or engine.builder.context_len
    return sample_sharegpt(
        sharegpt_file(bench.dataset_path),
        bench.num_prompts,
        engine.tokenizer,
        vocab,
        bench.sharegpt_output_len,
        context,
        shuffle,
        rng,
    )


class StepClock:
    """Times the scheduler's steps while in a `with` block (an instance attribute shadows
    `Scheduler.step`), for SGLang's "last generation throughput": tokens per second over the
    last window of decode steps. A decode step is one whose outputs hold no request's first
    token (that comes from a prefill); it is read from the outputs alone, so it holds with or
    without overlap scheduling. Each step's time runs from the end of the previous one, so the
    Engine's own output handling counts, as in SGLang's wall-clock window."""

    def __init__(self, engine: Engine) -> None:
        self.scheduler = engine.scheduler
        self.decode_steps: list[tuple[float, int]] = []  # (seconds, tokens)
        self.step_stats: list[StepStats] = []  # the scheduler's own figures, every step
        self._last_end = 0.0

    def __enter__(self) -> StepClock:
        step = self.scheduler.step
        self._last_end = time.perf_counter()

        def timed() -> list[TokenOut]:
            outputs = step()
            end = time.perf_counter()
            self.step_stats.append(self.scheduler.last_step)
            tokens = sum(len(o.new_token_ids) for o in outputs)
            if tokens and all(o.spec is None for o in outputs):  # spec: first output only
                self.decode_steps.append((end - self._last_end, tokens))
            self._last_end = end
            return outputs

        self.scheduler.step = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.scheduler.step  # the class's method again

    def breakdown(self) -> dict[str, float]:
        """Where the steps' time went (medians in ms) and the device's busy share per step:
        device seconds of the batch collected over the step's wall time (1.0: never idle)."""
        steps = [st for st in self.step_stats if st.wall_seconds > 0]
        if not steps:
            return {}
        busy = sorted(min(st.device_seconds / st.wall_seconds, 1.0) for st in steps)
        parts = ("wall", "build", "launch", "device_wait", "result", "device")
        out = {
            f"{part}_ms_median": 1e3
            * statistics.median(getattr(st, f"{part}_seconds") for st in steps)
            for part in parts
        }
        out["gpu_busy_share"] = sum(st.device_seconds for st in steps) / sum(
            st.wall_seconds for st in steps
        )
        # Percentiles of the per-step share from the idle end: p90 of steps are at least this busy.
        out["gpu_busy_p90_steps_at_least"] = busy[int(0.1 * (len(busy) - 1))]
        out["gpu_busy_median"] = statistics.median(busy)
        out["steps_at_least_99pct_busy"] = sum(b >= 0.99 for b in busy) / len(busy)
        # Decode-only batches against batches that carry a prefill chunk: how many, the device
        # time they took and their mean decode rows (the batch the decode kernels saw). A step's
        # device time is the batch it collected: under overlap, the one the step before launched
        # (a step's wall time mixes that batch's device time with the next one's launch, so
        # classifying by the launched batch would charge a prefill's device time to a decode).
        collected: list[tuple[StepStats, float]] = []
        for before, st in zip([None, *self.step_stats], self.step_stats, strict=False):
            batch = before if before is not None and before.overlapped else st
            collected.append((batch, st.device_seconds))
        for kind, chosen in (
            ("decode_only", [(b, d) for b, d in collected if b.prefill_tokens == 0]),
            ("with_prefill", [(b, d) for b, d in collected if b.prefill_tokens > 0]),
        ):
            out[f"{kind}_batches"] = len(chosen)
            out[f"{kind}_device_s"] = sum(d for _, d in chosen)
            out[f"{kind}_mean_decode_rows"] = (
                statistics.fmean(b.decode_tokens for b, _ in chosen) if chosen else 0.0
            )
        return out

    def last_gen_throughput(self) -> float:
        """0.0 when no decode step ran (as SGLang reports before its first decode log)."""
        window = self.decode_steps[-LAST_GEN_WINDOW_STEPS:]
        seconds = sum(s for s, _ in window)
        return sum(t for _, t in window) / seconds if seconds > 0 else 0.0


def throughput_test_once(
    engine: Engine, rows: Sequence[DatasetRow], bench: BenchArgs
) -> dict[str, Any]:
    extra = json.loads(bench.extra_request_body) if bench.extra_request_body else {}
    params = [
        {
            "temperature": 0,
            "max_new_tokens": r.output_len,
            "ignore_eos": not bench.disable_ignore_eos,
            **extra,
        }
        for r in rows
    ]
    counters_before = msgspec.to_builtins(engine.scheduler.counters)
    with StepClock(engine) as clock:
        start = time.perf_counter()
        outs = engine.generate(input_ids=[r.prompt_ids for r in rows], sampling_params=params)
        latency = time.perf_counter() - start
    counters = msgspec.to_builtins(engine.scheduler.counters)
    assert isinstance(outs, list)
    finished = [o for o in outs if (o["meta_info"]["finish_reason"] or {}).get("type") != "abort"]
    total_input = sum(r.prompt_len for r in rows)
    total_output = sum(o["meta_info"]["completion_tokens"] for o in outs)
    return {
        "backend": bench.backend,
        "successful_requests": len(finished),
        "total_latency": latency,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(finished) / latency,
        "input_throughput": total_input / latency,
        "output_throughput": total_output / latency,
        "total_throughput": (total_input + total_output) / latency,
        "last_gen_throughput": clock.last_gen_throughput(),
        "step_breakdown": clock.breakdown(),
        # The scheduler's counters over this run (steps, prefill and decode tokens, cache hits,
        # retractions, and whatever else it counts), for where the time went.
        "scheduler": {
            key: value - counters_before[key]
            for key, value in counters.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        },
    }


def print_summary(result: dict[str, Any]) -> None:
    print("\n{s:{c}^{n}}".format(s=" Offline Throughput Benchmark Result ", n=50, c="="))
    rows = [
        ("Backend:", "backend", ""),
        ("Successful requests:", "successful_requests", ""),
        ("Benchmark duration (s):", "total_latency", ".2f"),
        ("Total input tokens:", "total_input_tokens", ""),
        ("Total generated tokens:", "total_output_tokens", ""),
        ("Last generation throughput (tok/s):", "last_gen_throughput", ".2f"),
        ("Request throughput (req/s):", "request_throughput", ".2f"),
        ("Input token throughput (tok/s):", "input_throughput", ".2f"),
        ("Output token throughput (tok/s):", "output_throughput", ".2f"),
        ("Total token throughput (tok/s):", "total_throughput", ".2f"),
    ]
    for label, key, fmt in rows:
        print(f"{label:<40} {result[key]:<10{fmt}}")
    print("=" * 50)
    breakdown = result.get("step_breakdown") or {}
    if breakdown:
        print(
            "Per step (medians, ms): "
            + ", ".join(
                f"{k.removesuffix('_ms_median')} {v:.3f}"
                for k, v in breakdown.items()
                if k.endswith("_ms_median")
            )
        )
        print(
            f"GPU busy: {breakdown['gpu_busy_share']:.1%} of the wall time; 90% of steps at least "
            f"{breakdown['gpu_busy_p90_steps_at_least']:.1%} busy; "
            f"{breakdown['steps_at_least_99pct_busy']:.1%} of steps >= 99%"
        )
        for kind in ("decode_only", "with_prefill"):
            batches = breakdown[f"{kind}_batches"]
            device_s = breakdown[f"{kind}_device_s"]
            print(
                f"{kind.replace('_', ' ')} batches: {batches}, device {device_s:.2f} s "
                f"({1e3 * device_s / max(batches, 1):.2f} ms each), mean decode rows "
                f"{breakdown[f'{kind}_mean_decode_rows']:.1f}"
            )


def throughput_test(
    server: ServerArgs, bench: BenchArgs, model_name: str | None = None
) -> dict[str, Any]:
    engine = Engine(**dataclasses.asdict(server))
    try:
        rng = np.random.RandomState(bench.seed)
        rows = sample_requests(bench, engine, rng)
        print(f"#Input tokens: {sum(r.prompt_len for r in rows)}")
        print(f"#Output tokens: {sum(r.output_len for r in rows)}")
        if not bench.skip_warmup:
            warmup = sample_random(
                min(bench.num_prompts, WARMUP_PROMPTS),
                WARMUP_INPUT_LEN,
                WARMUP_OUTPUT_LEN,
                1.0,
                engine.builder.vocab_size,
                rng,
            )
            throughput_test_once(engine, warmup, bench)
            engine.flush_cache()  # the measured run starts from an empty cache
        result = throughput_test_once(engine, rows, bench)
        # Beyond SGLang's fields: what ran, and the limits the runtime resolved.
        result.update(
            dataset_name=bench.dataset_name,
            model_path=model_name or server.model_path,
            **dataclasses.asdict(engine.state.limits),
        )
    finally:
        engine.shutdown()
    if bench.result_filename:
        with open(bench.result_filename, "a") as out:
            out.write(json.dumps(result) + "\n")
    print_summary(result)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    parser.prog = "bench_offline_throughput"
    parser.description = __doc__.splitlines()[0]
    add_bench_args(parser)
    server, bench = split_args(parser.parse_args(argv), BenchArgs)
    return run_on_model(
        parser,
        server,
        lambda resolved: throughput_test(resolved, bench, model_name=server.model_path),
    )


if __name__ == "__main__":
    main()
