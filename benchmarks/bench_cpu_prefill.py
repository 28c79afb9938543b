"""Prefill on the CPU: the C step (queries in vector lanes) against the module path (torch's SDPA).

Two measurements, each side by side in one process:
- one prompt of N random tokens, `max_new_tokens` 1, cache flushed before each, through the
  offline Engine on the embedded SmolLM2-135M: the C step (the default) against the module path
  (the C step's `max_rows` set to 0), alternating, every length `--rounds` times; the greedy
  token of both must agree;
- one layer's causal attention alone (9 query heads over 3 KV heads of 64, a contiguous cache):
  the lane kernel called once per (16 rows, head), as the C step calls it, against torch's
  SDPA, both on one thread.

    python -m benchmarks.bench_cpu_prefill [--lengths 128 512 1024 2048] [--rounds 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from radixserve.kernels.cpu.lane_attention import ARGTYPES, LANES
from radixserve.kernels.cpu.small_gemm import small_gemm
from radixserve.runtime.entrypoints.engine import Engine
from radixserve.runtime.model_executor.models.llama import LlamaForCausalLM

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M


def prefill_seconds(engine: Engine, ids: list[int]) -> tuple[float, int]:
    engine.flush_cache()
    start = time.perf_counter()
    out = engine.generate(
        input_ids=ids, sampling_params={"max_new_tokens": 1, "temperature": 0, "ignore_eos": True}
    )
    assert isinstance(out, dict)
    return time.perf_counter() - start, int(out["output_ids"][0])


def attention_seconds(tokens: int) -> tuple[float, float]:
    """One layer's causal attention over `tokens` tokens: (lane kernel, SDPA), one thread each,
    the better of two runs."""
    gen = torch.Generator().manual_seed(tokens)
    q = torch.randn(tokens, HEADS, HEAD_DIM, generator=gen)
    k = torch.randn(tokens, KV_HEADS, HEAD_DIM, generator=gen)
    v = torch.randn(tokens, KV_HEADS, HEAD_DIM, generator=gen)
    slots = torch.arange(tokens)
    lengths = torch.arange(1, tokens + 1)
    group = HEADS // KV_HEADS
    out = torch.empty(tokens, HEADS * HEAD_DIM)

    kernel = small_gemm()
    if kernel is None:
        raise SystemExit("the compiled CPU kernels are unavailable")
    call = kernel.lib.rs_lane_attention
    call.argtypes = ARGTYPES
    flat = q.view(tokens, HEADS * HEAD_DIM)
    size = flat.element_size()

    def lanes() -> None:  # as the C step calls it: no checks, no copies
        for first in range(0, tokens, LANES):
            for h in range(HEADS):
                call(
                    flat.data_ptr() + (first * HEADS + h) * HEAD_DIM * size,
                    HEADS * HEAD_DIM,
                    min(LANES, tokens - first),
                    lengths.data_ptr() + first * lengths.element_size(),
                    HEAD_DIM,
                    HEAD_DIM**-0.5,
                    k.data_ptr() + h // group * HEAD_DIM * size,
                    v.data_ptr() + h // group * HEAD_DIM * size,
                    KV_HEADS * HEAD_DIM,
                    slots.data_ptr(),
                    out.data_ptr() + (first * HEADS + h) * HEAD_DIM * size,
                    HEADS * HEAD_DIM,
                )

    # [1, heads, tokens, D], as the module path calls it: without the batch dimension torch's CPU
    # SDPA takes its math fallback, 7x slower at 2,048 tokens (docs/cpu_profile.md section 15).
    q4, k4, v4 = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))

    def sdpa() -> None:
        F.scaled_dot_product_attention(q4, k4, v4, is_causal=True, enable_gqa=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = {}
        for name, timed in (("lanes", lanes), ("sdpa", sdpa)):
            times = []
            for _ in range(2):
                start = time.perf_counter()
                timed()
                times.append(time.perf_counter() - start)
            best[name] = min(times)
    finally:
        torch.set_num_threads(threads)
    return best["lanes"], best["sdpa"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    engine = Engine()
    model = engine.state.runner.model
    if not isinstance(model, LlamaForCausalLM):
        raise SystemExit(f"the embedded model is not a Llama: {type(model).__name__}")
    default_rows = model.cpu_step.max_rows
    rng = random.Random(0)
    engine.generate(input_ids=[rng.randrange(100, 40000) for _ in range(64)])  # warm-up
    times: dict[tuple[int, str], list[float]] = {}
    for round_index in range(args.rounds):
        for n in args.lengths:
            ids = [rng.randrange(100, 40000) for _ in range(n)]
            tokens = {}
            for path, rows in (("C step", default_rows), ("module path", 0)):
                model.cpu_step.max_rows = rows
                seconds, tokens[path] = prefill_seconds(engine, ids)
                times.setdefault((n, path), []).append(seconds)
                print(
                    f"round {round_index}  {n:>5} tokens  {path:<11}  {seconds:6.2f} s", flush=True
                )
            if len(set(tokens.values())) != 1:
                raise SystemExit(f"{n} tokens: the two paths chose different tokens {tokens}")
    model.cpu_step.max_rows = default_rows
    engine.shutdown()

    print("\none prompt, max_new_tokens 1 (median s; x = module path / C step)")
    print(f"{'tokens':>6} | {'C step':>7} | {'module path':>11} | {'x':>5}")
    for n in args.lengths:
        ours = statistics.median(times[(n, "C step")])
        theirs = statistics.median(times[(n, "module path")])
        print(f"{n:>6} | {ours:>7.2f} | {theirs:>11.2f} | {theirs / ours:>4.2f}x")
    print("\none layer's causal attention, one thread (ms; x = SDPA / lane kernel)")
    print(f"{'tokens':>6} | {'lanes':>7} | {'SDPA':>7} | {'x':>5}")
    for n in args.lengths:
        lanes, sdpa = attention_seconds(n)
        print(f"{n:>6} | {lanes * 1e3:>7.1f} | {sdpa * 1e3:>7.1f} | {sdpa / lanes:>4.2f}x")


if __name__ == "__main__":
    main()
