"""Few-shot workload on SmolLM2: the radix cache against --disable-radix-cache, in one run.

A 5-shot prefix from the `logiqa` task of the `evals` package (about 1,500 tokens with the
embedded tokenizer) followed by 64 questions, all submitted at once, greedy, a few answer tokens.
Prints prefill tokens computed, wall time and their ratios. Target: at least 3x faster with the
cache.

    python benchmarks/bench_fewshot_cache.py [--questions 64] [--shots 5]
"""

from __future__ import annotations

import argparse
import time

from benchmarks.fewshot_data import few_shot_prefix, few_shot_prompt, load_examples
from radixserve.runtime.entrypoints.engine import Engine


def run(engine: Engine, prompts: list[str], new_tokens: int) -> tuple[int, float, list[str]]:
    before = engine.scheduler.counters.prefill_tokens
    start = time.perf_counter()
    outs = engine.generate(prompts, {"temperature": 0, "max_new_tokens": new_tokens})
    elapsed = time.perf_counter() - start
    return engine.scheduler.counters.prefill_tokens - before, elapsed, [o["text"] for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=2)
    parser.add_argument("--task", default="logiqa")
    parser.add_argument("--file", default="logiqa.jsonl")
    args = parser.parse_args()

    system, examples = load_examples(args.task, args.file)
    prefix = few_shot_prefix(system, examples[: args.shots])
    questions = examples[args.shots : args.shots + args.questions]
    prompts = [few_shot_prompt(prefix, q.question) for q in questions]

    results = {}
    for label, disable in (("radix cache", False), ("no cache", True)):
        engine = Engine(disable_radix_cache=disable)
        prefix_tokens = len(engine.tokenizer.encode(prefix))
        results[label] = run(engine, prompts, args.new_tokens)
        engine.shutdown()
    (hit_tokens, hit_time, hit_texts), (miss_tokens, miss_time, miss_texts) = results.values()
    same = sum(a == b for a, b in zip(hit_texts, miss_texts, strict=True))
    print(
        f"\nfew-shot ({args.task}): {args.shots}-shot prefix of {prefix_tokens} tokens, "
        f"{len(prompts)} questions, {args.new_tokens} new tokens each"
    )
    print(f"{'':>12} | {'prefill tokens':>14} | {'wall s':>7}")
    print(f"{'radix cache':>12} | {hit_tokens:>14} | {hit_time:>7.2f}")
    print(f"{'no cache':>12} | {miss_tokens:>14} | {miss_time:>7.2f}")
    print(
        f"ratio: {miss_tokens / hit_tokens:.1f}x fewer prefill tokens, "
        f"{miss_time / hit_time:.1f}x faster; identical answers {same}/{len(prompts)}"
    )


if __name__ == "__main__":
    main()
