"""Branch and merge: draft several answers in parallel forks, judge them, then polish the best.

    python examples/branch_merge.py [--url http://127.0.0.1:30000] [--branches 3]

`s.fork(n)` computes the shared conversation once (a zero-token request puts it in the radix
cache), then the branches sample their drafts concurrently, each from the cached prefix.
`join()` gathers every branch's `draft` into the parent as a list; the parent then picks one with
`rs.select` and rewrites it.
"""

from __future__ import annotations

import argparse

import radixserve as rs

TOPICS = ["staying focused while studying", "saving money on groceries", "sleeping better"]


@rs.function
def branch_merge(s, topic, branches=3):
    s += rs.system("You are a helpful assistant who gives short, practical advice.")
    s += rs.user(f"Give one tip about {topic}, in one sentence.")
    forks = s.fork(branches)
    for i, fork in enumerate(forks):
        # Different seeds: the branches explore different drafts from the same prefix.
        fork += rs.assistant(rs.gen("draft", max_tokens=32, temperature=0.9, seed=i))
    forks.join()
    drafts = [d.strip() for d in s["draft"]]
    listing = "\n".join(f"{i + 1}. {d}" for i, d in enumerate(drafts))
    s += rs.assistant("Here are some candidate tips:\n" + listing)
    s += rs.user("Which tip is the most useful? Answer with its number only.")
    s += rs.assistant(rs.select("best", [str(i + 1) for i in range(branches)]))
    best = drafts[int(s["best"]) - 1]
    s += rs.user(f'Rewrite tip {s["best"]} to be clear and friendly: "{best}"')
    s += rs.assistant(rs.gen("final", max_tokens=40, temperature=0))
    return {"drafts": drafts, "best": best, "final": s["final"].strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    parser.add_argument("--branches", type=int, default=3)
    args = parser.parse_args()

    with rs.connect(args.url) as backend:
        batch = [{"topic": t, "branches": args.branches} for t in TOPICS]
        states = branch_merge.run_batch(batch, backend=backend, progress_bar=True)
    for topic, state in zip(TOPICS, states, strict=True):
        print(f"\n== {topic}")
        if state.error() is not None:
            print(f"  error: {state.error()}")
            continue
        result = state.ret_value
        for i, draft in enumerate(result["drafts"]):
            print(f"  draft {i + 1}: {draft}")
        print(f"  chosen: {result['best']}\n  final:  {result['final']}")


if __name__ == "__main__":
    main()
