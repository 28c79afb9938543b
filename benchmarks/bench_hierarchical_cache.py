"""Multi-turn agent sessions whose histories outgrow the device KV pool, with the host tier off
and on, in one run: prefill tokens computed, cache hit share and wall time.

Each of `--sessions` agents runs `--turns` turns. Every session starts with the same system
prompt (`--system-len` tokens) plus a task of its own (`--task-len`); each turn appends a tool
result / user message (`--user-len`) and the model's answer (`--output-len`, greedy, EOS ignored),
and the next turn's prompt is the whole history. A round sends one turn of every session in one
batch, so by the time a session comes back every other session has run in between: the LRU
position of the longest-lived agent programs. The device pool holds `--pool-fraction` of the
working set (every session's final history, the shared system prompt once), so without the tier
each turn recomputes most of its history; with it, evicted KV waits in host memory and is
copied back. The host tier holds 1.25x the working set unless `--hicache-size` or
`--hicache-ratio` says otherwise.

    # CPU, the embedded SmolLM2 (a few minutes on 2 cores):
    python benchmarks/bench_hierarchical_cache.py --sessions 8 --turns 3 --system-len 64 \\
        --task-len 32 --user-len 32 --output-len 8
    # GPU, the Llama-3.1-8B shape with dummy weights:
    python benchmarks/bench_hierarchical_cache.py --model-path llama-3.1-8b-shape \\
        --load-format dummy

Every server flag is accepted (they go to the Engine); `--enable-hierarchical-cache` and
`--max-total-tokens` are set by the benchmark (the latter only when not given). Token ids are
random (the dummy model's vocabulary is words; only the sharing structure matters). Prints one
table last: per mode, prompt tokens, prefill tokens computed, cache hit share, host hit and
load-back tokens, write-back tokens, load-back seconds, wall seconds; then the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_offline_throughput import StepClock  # noqa: E402
from benchmarks.engine_cli import add_dataclass_flags, run_on_model, split_args  # noqa: E402
from radixserve.runtime.config.server_args import ServerArgs  # noqa: E402
from radixserve.runtime.entrypoints.engine import Engine  # noqa: E402
from radixserve.runtime.entrypoints.launch_server import build_parser  # noqa: E402

LARGEST_REQUESTS = 1.5  # the smallest device pool, in requests of the longest turn
HOST_SLACK = 1.25  # host tier / working set, unless --hicache-size or --hicache-ratio is given


@dataclass(slots=True)
class BenchArgs:
    sessions: int = 64
    turns: int = 6
    system_len: int = 1024
    task_len: int = 512
    user_len: int = 256
    # An agent's turn ends in a tool call or a short reply: the histories grow by what the tools
    # return. Longer answers make the run decode-bound, where the tier has less to save.
    output_len: int = 32
    pool_fraction: float = 0.25  # device pool / working set, when --max-total-tokens is not set
    seed: int = 0
    skip_warmup: bool = False


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser, BenchArgs, "benchmark")


@dataclass(slots=True)
class Workload:
    """Every session's prompt material, drawn once so both modes replay the same tokens."""

    system: list[int]
    tasks: list[list[int]]
    users: list[list[list[int]]]  # [session][turn]

    @staticmethod
    def draw(bench: BenchArgs, vocab: int) -> Workload:
        rng = np.random.default_rng(bench.seed)
        low = min(1000, vocab // 2)  # away from special ids at the start of a vocabulary

        def ids(n: int) -> list[int]:
            return rng.integers(low, vocab, n).tolist()

        return Workload(
            system=ids(bench.system_len),
            tasks=[ids(bench.task_len) for _ in range(bench.sessions)],
            users=[
                [ids(bench.user_len) for _ in range(bench.turns)] for _ in range(bench.sessions)
            ],
        )

    def working_set(self, bench: BenchArgs) -> int:
        """Tokens of KV every final history holds, the shared system prompt counted once."""
        per_session = bench.task_len + bench.turns * (bench.user_len + bench.output_len)
        return bench.system_len + bench.sessions * per_session


@dataclass(slots=True)
class ModeResult:
    mode: str
    prompt_tokens: int = 0
    prefill_tokens: int = 0
    cache_hit_tokens: int = 0
    host_hit_tokens: int = 0
    load_back_tokens: int = 0
    write_back_tokens: int = 0
    load_back_seconds: float = 0.0
    wall_seconds: float = 0.0
    steps: int = 0
    idle_steps: int = 0  # steps with nothing to run (every waiting request's KV in transit)
    idle_seconds: float = 0.0
    device_seconds: float = 0.0  # the batches' device time (0 on the CPU)

    @property
    def hit_share(self) -> float:
        return self.cache_hit_tokens / max(self.prompt_tokens, 1)


def run_sessions(engine: Engine, work: Workload, bench: BenchArgs, mode: str) -> ModeResult:
    result = ModeResult(mode)
    histories = [work.system + task for task in work.tasks]
    counters = engine.scheduler.counters
    cache_before = engine.scheduler.cache.stats()
    prefill_before, hits_before = counters.prefill_tokens, counters.cache_hit_tokens
    params = {"temperature": 0, "max_new_tokens": bench.output_len, "ignore_eos": True}
    start = time.perf_counter()
    clock = StepClock(engine)
    for turn in range(bench.turns):
        prompts = [h + work.users[s][turn] for s, h in enumerate(histories)]
        with clock:
            outs = engine.generate(input_ids=prompts, sampling_params=[params] * len(prompts))
        assert isinstance(outs, list)
        for s, out in enumerate(outs):
            histories[s] = prompts[s] + list(out["output_ids"])
        result.prompt_tokens += sum(len(p) for p in prompts)
        print(
            f"  {mode}: turn {turn + 1}/{bench.turns} done at {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    result.wall_seconds = time.perf_counter() - start
    result.steps = len(clock.step_stats)
    idle = [st for st in clock.step_stats if st.batch_size == 0 and st.device_seconds == 0]
    result.idle_steps = len(idle)
    result.idle_seconds = sum(st.wall_seconds for st in idle)
    result.device_seconds = sum(st.device_seconds for st in clock.step_stats)
    cache = engine.scheduler.cache.stats()
    result.prefill_tokens = counters.prefill_tokens - prefill_before
    result.cache_hit_tokens = counters.cache_hit_tokens - hits_before
    result.host_hit_tokens = cache.host_hit_tokens - cache_before.host_hit_tokens
    result.load_back_tokens = cache.load_back_tokens - cache_before.load_back_tokens
    result.write_back_tokens = cache.write_back_tokens - cache_before.write_back_tokens
    result.load_back_seconds = cache.load_back_seconds - cache_before.load_back_seconds
    engine.scheduler.check_integrity()
    return result


def warm_up(engine: Engine, vocab: int) -> None:
    rng = np.random.default_rng(1)
    prompts = [rng.integers(min(1000, vocab // 2), vocab, 64).tolist() for _ in range(4)]
    params = {"temperature": 0, "max_new_tokens": 4, "ignore_eos": True}
    engine.generate(input_ids=prompts, sampling_params=[params] * 4)
    engine.flush_cache()


def run_mode(
    server: ServerArgs, bench: BenchArgs, tier: bool, pool_tokens: int | None, ratio: float
) -> Any:
    options = dataclasses.asdict(server)
    options["enable_hierarchical_cache"] = tier
    options["hicache_ratio"] = ratio
    if pool_tokens is not None:
        options["max_total_tokens"] = pool_tokens
    engine = Engine(**options)
    try:
        vocab = engine.builder.vocab_size
        work = Workload.draw(bench, vocab)
        if not bench.skip_warmup:
            warm_up(engine, vocab)
        mode = "tier on" if tier else "tier off"
        return run_sessions(engine, work, bench, mode), engine.scheduler.cache.num_pages
    finally:
        engine.shutdown()
        del engine
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def print_table(results: list[ModeResult], pool_tokens: int, working_set: int) -> None:
    print(
        f"\nhierarchical cache: device pool {pool_tokens:,} tokens, working set "
        f"{working_set:,} tokens ({working_set / max(pool_tokens, 1):.1f}x the pool)"
    )
    header = (
        f"{'mode':<10}{'prompt tok':>12}{'prefill tok':>13}{'hit share':>11}{'host hit':>10}"
        f"{'loaded':>10}{'written':>10}{'load s':>8}{'wall s':>9}"
    )
    print(header)
    for r in results:
        print(
            f"{r.mode:<10}{r.prompt_tokens:>12,}{r.prefill_tokens:>13,}{100 * r.hit_share:>10.1f}%"
            f"{r.host_hit_tokens:>10,}{r.load_back_tokens:>10,}{r.write_back_tokens:>10,}"
            f"{r.load_back_seconds:>8.2f}{r.wall_seconds:>9.1f}"
        )
    print("steps: per mode, steps run, idle steps (nothing admitted: every waiting request's KV in")
    print(
        "transit) and their wall seconds, and the batches' device seconds (on the CPU: the forwards)"
    )
    for r in results:
        print(
            f"  {r.mode:<9} {r.steps:>7,} steps {r.idle_steps:>7,} idle ({r.idle_seconds:.2f} s)"
            f"  device {r.device_seconds:.2f} s"
        )
    off, on = results
    fewer = off.prefill_tokens / max(on.prefill_tokens, 1)
    faster = off.wall_seconds / max(on.wall_seconds, 1e-9)
    print(f"tier on: {fewer:.2f}x fewer prefill tokens, {faster:.2f}x faster (wall)")


def bench_main(server: ServerArgs, bench: BenchArgs) -> list[ModeResult]:
    work_size = Workload(system=[], tasks=[], users=[]).working_set(bench)
    given = server.max_total_tokens
    # The pool holds at least LARGEST_REQUESTS of the longest turn (prompt and output), or a
    # session's last turn could not run at all.
    largest = bench.system_len + bench.task_len + bench.turns * (bench.user_len + bench.output_len)
    floor = int(LARGEST_REQUESTS * largest)
    pool = given if given is not None else max(int(work_size * bench.pool_fraction), floor)
    ratio = server.hicache_ratio
    if server.hicache_size == 0 and ratio == ServerArgs().hicache_ratio and given is None:
        ratio = HOST_SLACK * work_size / pool  # the host tier holds the whole working set
    results, pool_pages = [], 0
    for tier in (False, True):
        result, pool_pages = run_mode(server, bench, tier, None if given else pool, ratio)
        results.append(result)
    print_table(results, pool_pages * server.page_size, work_size)
    return results


def main(argv: Sequence[str] | None = None) -> list[ModeResult]:
    parser = build_parser()
    parser.prog = "bench_hierarchical_cache"
    parser.description = __doc__.splitlines()[0]
    add_bench_args(parser)
    server, bench = split_args(parser.parse_args(argv), BenchArgs)
    return run_on_model(parser, server, lambda resolved: bench_main(resolved, bench))


if __name__ == "__main__":
    main()
