"""Few-shot prompts from a real task file of the `evals` package (located without importing it).

`evals` ships JSONL task files under evals/registry/data/<task>/; each record has `input` (chat
messages) and `ideal` (the answer). A k-shot prompt is the task's system message, k solved
examples, then the question.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Example:
    question: str
    answer: str


def task_path(task: str, filename: str) -> str:
    spec = importlib.util.find_spec("evals")
    if spec is None or spec.origin is None:
        raise SystemExit("the `evals` package is not installed: pip install --no-deps evals")
    return os.path.join(os.path.dirname(spec.origin), "registry", "data", task, filename)


def load_examples(task: str, filename: str) -> tuple[str, list[Example]]:
    system = ""
    examples = []
    with open(task_path(task, filename), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            messages = record["input"]
            system = system or next((m["content"] for m in messages if m["role"] == "system"), "")
            question = "\n".join(m["content"] for m in messages if m["role"] == "user")
            ideal = record["ideal"]
            answer = ideal[0] if isinstance(ideal, list) else str(ideal)
            examples.append(Example(question, answer))
    return system, examples


def few_shot_prefix(system: str, shots: list[Example]) -> str:
    parts = [system.strip(), ""] if system else []
    for shot in shots:
        parts += [f"Question: {shot.question.strip()}", f"Answer: {shot.answer}", ""]
    return "\n".join(parts)


def few_shot_prompt(prefix: str, question: str) -> str:
    return f"{prefix}Question: {question.strip()}\nAnswer:"
