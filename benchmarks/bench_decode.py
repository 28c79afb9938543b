"""Decode throughput of the embedded SmolLM2 on this machine: radixserve vs HF `generate`.

Both run the same prompts, greedy, the same number of new tokens with EOS ignored, at batch 1 and
batch 16, in one process one after the other; the table gives output tokens per second and the
ratio. Prefill is included in both (short prompts, so decode dominates).

    python benchmarks/bench_decode.py [--new-tokens 64] [--batch-sizes 1 16] [--cpu-threads N]
        [--cpu-blas-threads N]

The Engine sets torch's intra-op threads (ServerArgs.cpu_threads; by default the CPUs available
less one), and HF `generate` runs after it in the same process, so on the same threads. A third
column runs radixserve again with torch's own matrix products and layers (--cpu-blas-threads
0), to show what kernels/cpu brings (the compiled products and C forward step, numpy's BLAS).
"""

from __future__ import annotations

import argparse
import time

import torch

from radixserve.runtime.config.model_source import resolve_model_source
from radixserve.runtime.entrypoints.engine import Engine

PROMPTS = [
    "The history of the printing press begins",
    "In a distant galaxy, a small robot",
    "Photosynthesis is the process by which",
    "The best way to learn a new language is",
    "Once upon a time there was a",
    "A good recipe for pancakes needs",
    "The stock market fell sharply today after",
    "Quantum computers differ from classical ones because",
]


def prompts_for(batch: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(batch)]


def bench_radixserve(engine: Engine, batch: int, new_tokens: int) -> float:
    params = {"temperature": 0, "max_new_tokens": new_tokens, "ignore_eos": True}
    engine.generate(prompts_for(batch), {**params, "max_new_tokens": 2})  # warm-up
    engine.flush_cache()
    start = time.perf_counter()
    outs = engine.generate(prompts_for(batch), params)
    elapsed = time.perf_counter() - start
    return sum(o["meta_info"]["completion_tokens"] for o in outs) / elapsed


def bench_hf(model, tokenizer, batch: int, new_tokens: int) -> float:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    inputs = tokenizer(prompts_for(batch), return_tensors="pt", padding=True)
    kwargs = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        model.generate(**inputs, min_new_tokens=2, max_new_tokens=2, **kwargs)  # warm-up
        start = time.perf_counter()
        out = model.generate(
            **inputs, min_new_tokens=new_tokens, max_new_tokens=new_tokens, **kwargs
        )
        elapsed = time.perf_counter() - start
    generated = (out.shape[1] - inputs["input_ids"].shape[1]) * batch
    return generated / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--cpu-threads", type=int, default=None, help="ServerArgs.cpu_threads")
    parser.add_argument(
        "--cpu-blas-threads", type=int, default=None, help="ServerArgs.cpu_blas_threads"
    )
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    # One engine at a time: the BLAS switch is process-wide, and each engine sets it at start.
    engine = Engine(cpu_threads=args.cpu_threads, cpu_blas_threads=args.cpu_blas_threads)
    tokenizer = engine.tokenizer
    ours = {b: bench_radixserve(engine, b, args.new_tokens) for b in args.batch_sizes}
    engine.shutdown()
    source = resolve_model_source(None)
    hf = AutoModelForCausalLM.from_pretrained(
        source.directory, gguf_file=source.gguf_file, dtype=torch.float32
    ).eval()
    theirs = {b: bench_hf(hf, tokenizer, b, args.new_tokens) for b in args.batch_sizes}
    engine = Engine(cpu_threads=args.cpu_threads, cpu_blas_threads=0)
    torch_only = {b: bench_radixserve(engine, b, args.new_tokens) for b in args.batch_sizes}
    engine.shutdown()
    print(f"\nSmolLM2-135M decode, {args.new_tokens} new tokens, {torch.get_num_threads()} threads")
    print(
        f"{'batch':>5} | {'radixserve tok/s':>16} | {'HF generate tok/s':>17} | {'ratio':>6} | "
        f"{'radixserve, torch only':>26} | {'kernels/cpu gain':>16}"
    )
    for b in args.batch_sizes:
        print(
            f"{b:>5} | {ours[b]:>16.1f} | {theirs[b]:>17.1f} | {ours[b] / theirs[b]:>5.2f}x | "
            f"{torch_only[b]:>26.1f} | {ours[b] / torch_only[b]:>15.2f}x"
        )


if __name__ == "__main__":
    main()
