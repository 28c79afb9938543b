"""Few-shot evaluation over a real task file of the `evals` package, with run_batch.

    python examples/few_shot_eval.py                       # largest_country, 5 shots, 20 questions
    python examples/few_shot_eval.py --task logiqa --shots 2 --questions 10   # A-D: uses select
    python examples/few_shot_eval.py --url http://127.0.0.1:30000             # an existing server

Every program is the task's system message, the same solved examples as user/assistant turns,
then its own question. That shared prefix is computed once: after the first call, each call's
`cached_tokens` (from `state.get_meta_info("answer")`) covers it, which the script prints.
Tasks whose answers are a few labels (A-D) are answered with `rs.select`, others with `rs.gen`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from dataclasses import dataclass

import radixserve as rs

MAX_LABELS = 8  # a task with at most this many distinct short answers is multiple choice


@dataclass(slots=True)
class Task:
    system: str
    examples: list[tuple[str, str]]  # (question, answer)


@dataclass(slots=True)
class EvalReport:
    accuracy: float
    seconds: float
    prefix_tokens: int
    coverage: list[float]  # per call: cached_tokens / prefix_tokens, in batch order
    answers: list[str]
    prompt_tokens: int  # over all calls
    cached_tokens: int
    completion_tokens: int


def load_task(task: str) -> Task:
    """Reads evals/registry/data/<task>/*.jsonl without importing `evals`."""
    spec = importlib.util.find_spec("evals")
    if spec is None or spec.origin is None:
        raise SystemExit("the `evals` package is not installed: pip install --no-deps evals")
    folder = os.path.join(os.path.dirname(spec.origin), "registry", "data", task)
    files = sorted(f for f in os.listdir(folder) if f.endswith(".jsonl"))
    system, examples = "", []
    with open(os.path.join(folder, files[0]), encoding="utf-8") as f:
        for line in filter(str.strip, f):
            record = json.loads(line)
            messages = record["input"]
            system = system or next((m["content"] for m in messages if m["role"] == "system"), "")
            question = "\n".join(m["content"] for m in messages if m["role"] == "user")
            ideal = record["ideal"]
            examples.append((question.strip(), str(ideal[0] if isinstance(ideal, list) else ideal)))
    return Task(system, examples)


@rs.function
def few_shot_prefix(s, system, shots):
    if system:
        s += rs.system(system)
    for question, answer in shots:
        s += rs.user(question)
        s += rs.assistant(answer)


@rs.function
def few_shot_qa(s, system, shots, question, choices=None):
    few_shot_prefix(s, system, shots)
    s += rs.user(question)
    if choices:
        s += rs.assistant(rs.select("answer", choices))
    else:
        s += rs.assistant(rs.gen("answer", max_tokens=16, stop="\n"))


def is_correct(answer: str, ideal: str) -> bool:
    return answer.strip().lower().startswith(ideal.strip().lower())


def evaluate(
    backend: rs.RuntimeEndpoint,
    task_name: str = "largest_country",
    shots: int = 5,
    questions: int = 20,
    progress_bar: bool = True,
) -> EvalReport:
    task = load_task(task_name)
    solved, tested = task.examples[:shots], task.examples[shots : shots + questions]
    labels = sorted({answer for _, answer in task.examples})
    choices = labels if len(labels) <= MAX_LABELS else None
    batch = [
        {"system": task.system, "shots": solved, "question": q, "choices": choices}
        for q, _ in tested
    ]
    start = time.perf_counter()
    states = few_shot_qa.run_batch(
        batch, backend=backend, temperature=0, max_new_tokens=16, progress_bar=progress_bar
    )
    seconds = time.perf_counter() - start
    for state in states:
        if state.error() is not None:
            raise state.error()
    # The shared prefix alone (already cached by now, so this costs one token).
    prefix = few_shot_prefix.run(system=task.system, shots=solved, backend=backend).text()
    prefix_tokens = int(backend.cache_prefix(prefix)["prompt_tokens"])
    answers = [s["answer"] for s in states]
    metas = [s.get_meta_info("answer") for s in states]
    cached = [int(m["cached_tokens"]) for m in metas]
    correct = sum(is_correct(a, ideal) for a, (_, ideal) in zip(answers, tested, strict=True))
    return EvalReport(
        accuracy=correct / len(tested),
        seconds=seconds,
        prefix_tokens=prefix_tokens,
        coverage=[min(c / prefix_tokens, 1.0) for c in cached],
        answers=answers,
        prompt_tokens=sum(int(m["prompt_tokens"]) for m in metas),
        cached_tokens=sum(cached),
        completion_tokens=sum(int(m.get("completion_tokens", 0)) for m in metas),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="largest_country")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    args = parser.parse_args()

    with rs.connect(args.url) as backend:
        report = evaluate(backend, args.task, args.shots, args.questions)
    later = report.coverage[1:]
    print(f"task {args.task}: {args.shots} shots, {len(report.answers)} questions")
    print(f"accuracy: {report.accuracy:.1%}   wall time: {report.seconds:.1f} s")
    print(
        f"shared prefix: {report.prefix_tokens} tokens; cached on calls after the first: "
        f"min {min(later, default=0):.0%}, mean {sum(later) / max(len(later), 1):.0%}"
    )


if __name__ == "__main__":
    main()
