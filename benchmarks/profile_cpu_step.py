"""Where the CPU path spends its time: cProfile and torch.profiler over `Engine.generate`.

Runs the embedded SmolLM2 greedy at each batch size (EOS ignored, a short run), first under
cProfile (Python functions by own time: scheduling, detokenization, batch building, sampling)
and then under torch.profiler (operators by self CPU time: matmuls, attention, norms, copies).
Prints the top rows of each and the wall time per decode step.

    python benchmarks/profile_cpu_step.py [--batch-sizes 1 16] [--new-tokens 16] [--threads N]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from radixserve.runtime.entrypoints.engine import Engine

from .bench_decode import prompts_for


def run(engine: Engine, batch: int, new_tokens: int) -> float:
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    engine.flush_cache()
    start = time.perf_counter()
    engine.generate(prompts_for(batch), params)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="ServerArgs.cpu_threads")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()

    options = {} if args.threads is None else {"cpu_threads": args.threads}
    engine = Engine(**options)
    print(f"torch threads: {torch.get_num_threads()}")
    for batch in args.batch_sizes:
        run(engine, batch, 2)  # warm-up
        wall = run(engine, batch, args.new_tokens)
        print(
            f"\n=== batch {batch}: {wall:.2f} s for {args.new_tokens} tokens "
            f"({wall / args.new_tokens * 1000:.1f} ms per step incl. prefill)"
        )
        profile = cProfile.Profile()
        profile.enable()
        run(engine, batch, args.new_tokens)
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
        print(text.getvalue())
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run(engine, batch, args.new_tokens)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    engine.shutdown()


if __name__ == "__main__":
    main()
