"""Data-parallel routing on SmolLM2: two replicas (`--dp-size 2`), cache-aware vs round-robin.

Four few-shot prompt families (different 3-shot prefixes from the `logiqa` task of the `evals`
package) and their questions arrive shuffled, 8 at a time. A prefix is reused only on the replica
that computed it: round-robin spreads every family over both replicas (each computes every
prefix), cache-aware routing keeps a family on one. The servers run one after the other, in one
run; per method it prints wall time, prompt tokens, tokens served from the cache and prefill
tokens computed.

    python -m benchmarks.bench_dp_routing [--families 4] [--questions 12]
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

import radixserve as rs
from benchmarks.fewshot_data import few_shot_prefix, few_shot_prompt, load_examples

METHODS = ("cache_aware", "round_robin")


def run(method: str, prompts: list[str], concurrency: int, pool_tokens: int) -> dict[str, float]:
    with rs.Runtime(dp_size=2, load_balance_method=method, max_total_tokens=pool_tokens) as runtime:
        with httpx.Client(base_url=runtime.url, timeout=600) as client:

            def one(prompt: str) -> dict:
                body = {"text": prompt, "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
                reply = client.post("/generate", json=body)
                reply.raise_for_status()
                return reply.json()["meta_info"]

            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                metas = list(pool.map(one, prompts))
            elapsed = time.perf_counter() - start
            stats = client.get("/get_server_info").json()["scheduler"]
    return {
        "wall_s": elapsed,
        "prompt_tokens": sum(m["prompt_tokens"] for m in metas),
        "cached_tokens": sum(m["cached_tokens"] for m in metas),
        "prefill_tokens": stats["prefill_tokens"],
        "split": "/".join(str(r["requests_finished"]) for r in stats["replicas"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=4)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--questions", type=int, default=12, help="per family")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--max-total-tokens", type=int, default=16384, help="KV pool of each replica, in tokens"
    )
    args = parser.parse_args()
    system, examples = load_examples("logiqa", "logiqa.jsonl")
    prefixes = [
        few_shot_prefix(system, examples[f * args.shots : (f + 1) * args.shots])
        for f in range(args.families)
    ]
    pool = examples[args.families * args.shots :]
    prompts = [
        few_shot_prompt(prefix, pool[(f * args.questions + q) % len(pool)].question)
        for f, prefix in enumerate(prefixes)
        for q in range(args.questions)
    ]
    random.Random(0).shuffle(prompts)
    results = {
        method: run(method, prompts, args.concurrency, args.max_total_tokens) for method in METHODS
    }
    print(
        f"\n{len(prompts)} requests: {args.families} families of {args.shots}-shot logiqa prefixes,"
        f" shuffled, {args.concurrency} at a time, 2 replicas of {args.max_total_tokens} KV tokens"
    )
    print(
        f"{'method':>12} | {'wall s':>7} | {'prompt tok':>10} | {'cached':>7} | {'prefill':>7} | split"
    )
    for method, r in results.items():
        print(
            f"{method:>12} | {r['wall_s']:>7.1f} | {r['prompt_tokens']:>10} | "
            f"{r['cached_tokens']:>7} | {r['prefill_tokens']:>7} | {r['split']}"
        )
    aware, rr = results["cache_aware"], results["round_robin"]
    print(
        f"cache-aware vs round-robin: {rr['prefill_tokens'] / aware['prefill_tokens']:.2f}x fewer "
        f"prefill tokens, {rr['wall_s'] / aware['wall_s']:.2f}x faster"
    )


if __name__ == "__main__":
    main()
