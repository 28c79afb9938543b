"""N-gram speculative decoding on the embedded SmolLM2: greedy outputs are token-identical with
and without it, in fewer steps on text the model copies, mixed with requests that cannot speculate."""

from __future__ import annotations

import json

import pytest

from radixserve.runtime.entrypoints.engine import Engine
from tests.runtime.smollm2 import chat_prompt

TEXT = (
    "Radix trees share prefixes of token sequences, so a prompt computed once serves every later "
    "request that starts the same way."
)


@pytest.fixture(scope="module")
def engine():
    eng = Engine(page_size=16, max_total_tokens=32768, speculative_algorithm="ngram")
    yield eng
    eng.shutdown()


def chat(engine: Engine, question: str) -> str:
    return chat_prompt(engine.tokenizer, question)


def test_drafts_come_from_two_token_matches_by_default(engine: Engine) -> None:
    assert engine.state.scheduler.builder.config.ngram_min == 2


def test_speculation_is_invisible_and_saves_steps(engine: Engine) -> None:
    prompts = [
        chat(engine, "Write the numbers from 1 to 30 separated by commas."),
        chat(engine, f"Repeat this text exactly:\n{TEXT}"),
        "The capital of France is",
    ]
    params = [
        {"temperature": 0, "max_new_tokens": 64},
        {"temperature": 0, "max_new_tokens": 48},
        {"temperature": 0.8, "seed": 3, "max_new_tokens": 24},  # sampled: never speculates
    ]
    scheduler = engine.state.scheduler
    config = scheduler.builder.config
    runs = {}
    for drafts in (0, 4):
        config.num_draft_tokens = drafts
        before = scheduler.counters.steps
        outs = engine.generate(prompts, params)
        runs[drafts] = ([o["output_ids"] for o in outs], scheduler.counters.steps - before)
    config.num_draft_tokens = 4
    assert runs[4][0] == runs[0][0]
    assert scheduler.counters.spec_accepted_tokens > 0
    assert runs[4][1] < runs[0][1], runs


def test_speculation_under_a_json_schema(engine: Engine) -> None:
    # Extraction copies the document into the JSON values: drafts found in the prompt are
    # checked against the grammar first, then verified row by row under its masks.
    schema = {
        "type": "object",
        "properties": {
            "customer": {"type": "string", "maxLength": 40},
            "address": {"type": "string", "maxLength": 60},
        },
        "required": ["customer", "address"],
        "additionalProperties": False,
    }
    document = "Order from Margaret Elizabeth Thompson, 1428 Elm Street, Springfield: one kettle."
    prompt = chat(engine, f"Extract the order as JSON.\n{document}")
    params = {"temperature": 0, "max_new_tokens": 80, "json_schema": schema}
    scheduler = engine.state.scheduler
    config = scheduler.builder.config
    runs = {}
    for drafts in (0, 4):
        config.num_draft_tokens = drafts
        before, kept = scheduler.counters.steps, scheduler.counters.spec_accepted_tokens
        out = engine.generate(prompt, params)
        runs[drafts] = (out["output_ids"], scheduler.counters.steps - before)
        assert (scheduler.counters.spec_accepted_tokens > kept) == bool(drafts)
    config.num_draft_tokens = 4
    assert runs[4][0] == runs[0][0]
    assert runs[4][1] < runs[0][1], runs
    assert set(json.loads(out["text"])) == {"customer", "address"}
