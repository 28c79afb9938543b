"""N-gram speculative decoding on the embedded SmolLM2 (CPU): off vs on, side by side.

Workloads where outputs copy their context, as agent and extraction outputs do: repeating a
passage, rewriting code, listing a sequence, quoting a document's fields. One Engine; the draft
width is switched between runs (0 = off), modes interleaved, best of `--repeats`. Greedy, so the
outputs must be token-identical; the table gives wall time, engine steps, draft acceptance.

    python -m benchmarks.bench_speculative [--drafts 4] [--ngram-min 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from radixserve.runtime.entrypoints.engine import Engine

PASSAGE = (
    "The scheduler matches each prompt against the radix tree, locks the matched path, and "
    "admits requests in order of their longest cached prefix while the token budget allows."
)
CODE = """def moving_average(values, window):
    result = []
    for i in range(len(values) - window + 1):
        chunk = values[i:i + window]
        result.append(sum(chunk) / window)
    return result
"""
TASKS = [
    f"Repeat this paragraph exactly:\n{PASSAGE}",
    f"Add a docstring to this function and return the whole function:\n{CODE}",
    "Write the numbers from 1 to 40 separated by commas.",
    "Order 5567: customer Ana Lima, item blue notebook, quantity 3, city Lisbon. "
    "Rewrite the order as lines of the form field: value.",
]


def chat(engine: Engine, question: str) -> str:
    return engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def run(engine: Engine, prompts: list[str], drafts: int, batched: bool, new: int) -> dict:
    scheduler = engine.state.scheduler
    scheduler.builder.config.num_draft_tokens = drafts
    engine.flush_cache()
    counters = scheduler.counters
    steps, proposed, kept = (
        counters.steps,
        counters.spec_draft_tokens,
        counters.spec_accepted_tokens,
    )
    params = {"temperature": 0, "max_new_tokens": new}
    start = time.perf_counter()
    if batched:
        outs = engine.generate(prompts, params)
    else:
        outs = [engine.generate(p, params) for p in prompts]
    return {
        "seconds": time.perf_counter() - start,
        "steps": counters.steps - steps,
        "proposed": counters.spec_draft_tokens - proposed,
        "kept": counters.spec_accepted_tokens - kept,
        "tokens": sum(len(o["output_ids"]) for o in outs),
        "ids": [o["output_ids"] for o in outs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", type=int, default=4)
    parser.add_argument("--ngram-min", type=int, default=2, help="shortest n-gram looked up")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(
        page_size=16,
        max_total_tokens=32768,
        speculative_algorithm="ngram",
        speculative_ngram_min=args.ngram_min,
    )
    prompts = [chat(engine, t) for t in TASKS]
    engine.generate(prompts[0], {"max_new_tokens": 2})  # warm-up
    print(
        f"\nSmolLM2-135M on the CPU ({args.threads} threads), greedy, {len(prompts)} tasks, "
        f"drafts from {args.ngram_min}- to {engine.state.scheduler.builder.config.ngram_max}-token "
        "matches"
    )
    print(
        f"{'batch':<11} {'drafts':>6} {'seconds':>8} {'steps':>6} {'tokens':>7} "
        f"{'accepted':>9} {'speedup':>8}"
    )
    for batched in (False, True):
        best: dict[int, dict] = {}
        for _ in range(args.repeats):
            for drafts in (0, args.drafts):
                result = run(engine, prompts, drafts, batched, args.new_tokens)
                if drafts not in best or result["seconds"] < best[drafts]["seconds"]:
                    best[drafts] = result
        off, on = best[0], best[args.drafts]
        assert on["ids"] == off["ids"], "speculation changed a greedy output"
        label = "all at once" if batched else "one by one"
        for drafts, r in ((0, off), (args.drafts, on)):
            rate = f"{100 * r['kept'] / r['proposed']:.0f}%" if r["proposed"] else "-"
            speedup = f"{off['seconds'] / r['seconds']:.2f}x"
            print(
                f"{label:<11} {drafts:>6} {r['seconds']:>8.2f} {r['steps']:>6} "
                f"{r['tokens']:>7} {rate:>9} {speedup:>8}"
            )
    print("outputs identical with and without speculation: yes")
    engine.shutdown()


if __name__ == "__main__":
    main()
