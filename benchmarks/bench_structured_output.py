"""Structured output on the embedded SmolLM2: jump-forward vs token-by-token, and grammar cost.

One Engine, four modes run back to back on the same prompts (greedy, batch of `--batch`):
  * json + jump-forward + ngram: as below, plus n-gram speculative decoding (drafts looked up
    in the prompt, filtered and verified under the grammar's masks);
  * json + jump-forward: JSON-schema-constrained, grammar-forced tokens fed as one chunk;
  * json, token by token: the same constraint, every forced token a decode step of its own;
  * unconstrained: the same number of output tokens per request with no grammar (EOS ignored),
    to price the grammar's per-step mask.
The table gives wall time, engine steps, output tokens, forced tokens, output tok/s and the share
of outputs that parse and follow the schema. Best of `--repeats` runs per mode, modes interleaved.

    python -m benchmarks.bench_structured_output [--batch 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from radixserve.runtime.entrypoints.engine import Engine

# Long keys and enums: the kind of schema a tool-calling agent fills, where much is forced.
SCHEMA = {
    "type": "object",
    "properties": {
        "customer_full_name": {"type": "string", "maxLength": 24},
        "shipping_destination_country": {"type": "string", "maxLength": 24},
        "order_priority_level": {"enum": ["standard", "express", "overnight"]},
        "number_of_items_ordered": {"type": "integer", "minimum": 1, "maximum": 99},
        "gift_wrapping_requested": {"type": "boolean"},
    },
    "required": [
        "customer_full_name",
        "shipping_destination_country",
        "order_priority_level",
        "number_of_items_ordered",
        "gift_wrapping_requested",
    ],
    "additionalProperties": False,
}
CUSTOMERS = ["Ana Lima", "Kenji Sato", "Marie Dubois", "Omar Haddad", "Lena Vogel", "Raj Patel"]
COUNTRIES = ["Brazil", "Japan", "France", "Egypt", "Germany", "India"]


def prompts(engine: Engine, batch: int) -> list[str]:
    out = []
    for i in range(batch):
        ask = (
            f"{CUSTOMERS[i % 6]} orders {i % 5 + 1} books to {COUNTRIES[(i + 1) % 6]}, "
            f"express, as a gift. Extract the order as JSON."
        )
        out.append(
            engine.tokenizer.apply_chat_template(
                [{"role": "user", "content": ask}], tokenize=False, add_generation_prompt=True
            )
        )
    return out


def valid(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return set(value) == set(SCHEMA["properties"]) and 1 <= value["number_of_items_ordered"] <= 99


def run_mode(engine: Engine, mode: str, batch: int, lengths: list[int]) -> dict[str, float]:
    scheduler = engine.state.scheduler
    scheduler.jump_forward = mode.startswith("json + jump-forward")
    scheduler.builder.config.num_draft_tokens = 4 if mode.endswith("ngram") else 0
    texts = prompts(engine, batch)
    if mode == "unconstrained":
        params = [{"temperature": 0, "max_new_tokens": n, "ignore_eos": True} for n in lengths]
    else:
        params = [{"temperature": 0, "max_new_tokens": 160, "json_schema": json.dumps(SCHEMA)}]
        params = params * batch
    engine.flush_cache()
    steps, forced = scheduler.counters.steps, scheduler.counters.jump_forward_tokens
    start = time.perf_counter()
    outs = engine.generate(texts, params)
    seconds = time.perf_counter() - start
    tokens = [len(o["output_ids"]) for o in outs]
    return {
        "seconds": seconds,
        "steps": scheduler.counters.steps - steps,
        "tokens": sum(tokens),
        "forced": scheduler.counters.jump_forward_tokens - forced,
        "valid": sum(valid(o["text"]) for o in outs) / len(outs) if mode != "unconstrained" else 0,
        "lengths": tokens,
        "ids": [o["output_ids"] for o in outs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(page_size=16, max_total_tokens=32768, speculative_algorithm="ngram")
    engine.generate("warm-up", {"max_new_tokens": 2, "regex": "[a-z]+"})
    modes = [
        "json + jump-forward + ngram",
        "json + jump-forward",
        "json, token by token",
        "unconstrained",
    ]
    best: dict[str, dict[str, float]] = {}
    lengths: list[int] = []
    for _ in range(args.repeats):
        for mode in modes:
            result = run_mode(engine, mode, args.batch, lengths)
            if mode == "json + jump-forward":
                lengths = result["lengths"]  # unconstrained runs emit as many tokens
            if mode not in best or result["seconds"] < best[mode]["seconds"]:
                best[mode] = result
    engine.shutdown()
    print(f"\n{args.batch} requests, greedy, SmolLM2-135M on the CPU ({args.threads} threads)")
    print(
        f"{'mode':<28} {'seconds':>8} {'steps':>6} {'tokens':>7} {'forced':>7} {'tok/s':>7} "
        f"{'valid':>6}"
    )
    for mode in modes:
        r = best[mode]
        valid_col = f"{100 * r['valid']:.0f}%" if mode != "unconstrained" else "-"
        print(
            f"{mode:<28} {r['seconds']:>8.2f} {r['steps']:>6} {r['tokens']:>7} {r['forced']:>7} "
            f"{r['tokens'] / r['seconds']:>7.1f} {valid_col:>6}"
        )
    tbt = best["json, token by token"]
    for mode in modes[:2]:
        r = best[mode]
        print(
            f"{mode}: {tbt['steps'] / r['steps']:.2f}x fewer steps, "
            f"{tbt['seconds'] / r['seconds']:.2f}x faster than token by token"
        )
    same = best[modes[0]]["ids"] == best[modes[1]]["ids"] == tbt["ids"]
    print(f"json outputs identical in the three json modes: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
