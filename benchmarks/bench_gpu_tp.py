"""Tensor parallelism on the GPUs of one host: a Llama-3.1-8B-shaped model (random weights) at
tp 1 and tp 2, one after the other in one process, with the same requests.

Per tp size: output tok/s and the median decode step at batch 1 and for a batch of requests of
mixed prompt lengths, EOS ignored. Ranks after the first run in worker processes over NCCL.

    python3 benchmarks/bench_gpu_tp.py [--tp 1 2] [--requests 64] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_gpu_decode import (  # noqa: E402
    dummy_model_args,
    report,
    run_scheduler,
    write_model_dir,
)
from radixserve.runtime.model_executor.tp_worker import create_model_runner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    model_dir = write_model_dir()
    rng = random.Random(0)
    single = [[rng.randrange(128000) for _ in range(128)]]
    prompts = [
        [rng.randrange(128000) for _ in range(rng.randrange(64, 1024))]
        for _ in range(args.requests)
    ]
    rows: dict[str, float] = {}
    for tp in args.tp:
        runner = create_model_runner(
            dummy_model_args(model_dir, mem_fraction_static=0.6, tp_size=tp)
        )
        try:
            run_scheduler(
                runner, [[rng.randrange(128000) for _ in range(300)] for _ in range(4)], 8
            )
            one = run_scheduler(runner, single, 128)
            many = run_scheduler(runner, prompts, args.new_tokens)
        finally:
            if tp > 1:
                runner.shutdown()
        rows[f"tp{tp}_batch1_tok_s"] = one["tok_s"]
        rows[f"tp{tp}_batch1_decode_step_ms"] = one["decode_ms"]
        rows[f"tp{tp}_{args.requests}req_tok_s"] = many["tok_s"]
        rows[f"tp{tp}_{args.requests}req_decode_step_ms"] = many["decode_ms"]
        del runner
        gc.collect()
        torch.cuda.empty_cache()
    base = args.tp[0]
    for tp in args.tp[1:]:
        rows[f"tp{tp}_vs_tp{base}_batch1"] = (
            rows[f"tp{tp}_batch1_tok_s"] / rows[f"tp{base}_batch1_tok_s"]
        )
        rows[f"tp{tp}_vs_tp{base}_{args.requests}req"] = (
            rows[f"tp{tp}_{args.requests}req_tok_s"] / rows[f"tp{base}_{args.requests}req_tok_s"]
        )
    title = (
        f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()} | Llama-3.1-8B shape, bf16"
    )
    report(title, rows, args.out, width=36)


if __name__ == "__main__":
    main()
