"""Structured outputs on the embedded SmolLM2 through the offline Engine: every output follows
its grammar (greedy and sampled), plain requests in the same batch are unaffected, jump-forward
saves steps, and a bad grammar is a clear error that leaves the engine serving."""

from __future__ import annotations

import json
import re

import pytest

from radixserve.runtime.entrypoints.engine import Engine
from radixserve.runtime.server.request_builder import InvalidRequestError
from tests.runtime.smollm2 import chat_prompt

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 99},
        "is_capital": {"type": "boolean"},
    },
    "required": ["city", "country", "population_millions", "is_capital"],
    "additionalProperties": False,
}
PHONE = r"\(\d{3}\) \d{3}-\d{4}"


@pytest.fixture(scope="module")
def engine():
    eng = Engine(page_size=16, max_total_tokens=32768)
    yield eng
    eng.shutdown()


def chat(engine: Engine, question: str) -> str:
    return chat_prompt(engine.tokenizer, question)


def check_city(text: str) -> None:
    value = json.loads(text)
    assert set(value) == set(CITY["properties"]), text
    assert isinstance(value["city"], str) and len(value["city"]) <= 24
    assert isinstance(value["population_millions"], int)
    assert 0 <= value["population_millions"] <= 99
    assert isinstance(value["is_capital"], bool)


def test_json_schema_outputs_parse_and_follow_the_schema(engine: Engine) -> None:
    prompts = [chat(engine, f"Give facts about {c} as JSON.") for c in ("Paris", "Tokyo", "Lima")]
    params = {"temperature": 0, "max_new_tokens": 120, "json_schema": json.dumps(CITY)}
    for out in engine.generate(prompts, params):
        check_city(out["text"])
        assert out["meta_info"]["finish_reason"]["type"] == "stop"


def test_sampled_outputs_follow_the_grammar_too(engine: Engine) -> None:
    prompt = chat(engine, "Describe a city as JSON.")
    params = [
        {"temperature": 1.0, "seed": s, "max_new_tokens": 120, "json_schema": json.dumps(CITY)}
        for s in range(4)
    ]
    for out in engine.generate([prompt] * 4, params):
        check_city(out["text"])


def test_regex_and_ebnf(engine: Engine) -> None:
    outs = engine.generate(
        [
            chat(engine, "What is the phone number of the office?"),
            chat(engine, "Is Paris in France?"),
            chat(engine, "Pick a color."),
        ],
        [
            {"temperature": 0, "max_new_tokens": 30, "regex": PHONE},
            {"temperature": 0, "max_new_tokens": 30, "regex": "(yes|no)"},
            {
                "temperature": 0,
                "max_new_tokens": 30,
                "ebnf": 'root ::= "The color is " ("red" | "green" | "blue") "."',
            },
        ],
    )
    assert re.fullmatch(PHONE, outs[0]["text"])
    assert outs[1]["text"] in ("yes", "no")
    assert re.fullmatch(r"The color is (red|green|blue)\.", outs[2]["text"])
    assert all(o["meta_info"]["finish_reason"]["type"] == "stop" for o in outs)


def test_plain_requests_in_the_same_batch_are_unchanged(engine: Engine) -> None:
    plain = ["The capital of France is", "def fibonacci(n):"]
    greedy = {"temperature": 0, "max_new_tokens": 16, "ignore_eos": True}
    alone = engine.generate(plain, greedy)
    constrained = {"temperature": 0, "max_new_tokens": 60, "json_schema": json.dumps(CITY)}
    mixed = engine.generate(
        [plain[0], chat(engine, "Rome as JSON."), plain[1]], [greedy, constrained, greedy]
    )
    assert [mixed[0]["output_ids"], mixed[2]["output_ids"]] == [a["output_ids"] for a in alone]
    check_city(mixed[1]["text"])


def test_jump_forward_saves_steps(engine: Engine) -> None:
    scheduler = engine.state.scheduler
    prompt = chat(engine, "Give facts about Berlin as JSON.")
    params = {"temperature": 0, "max_new_tokens": 120, "json_schema": json.dumps(CITY)}
    steps, texts = {}, {}
    for jump_forward in (False, True):
        scheduler.jump_forward = jump_forward
        before, forced = scheduler.counters.steps, scheduler.counters.jump_forward_tokens
        out = engine.generate(prompt, params)
        steps[jump_forward] = scheduler.counters.steps - before
        texts[jump_forward] = out["text"]
        assert (scheduler.counters.jump_forward_tokens > forced) == jump_forward
    scheduler.jump_forward = True
    for text in texts.values():
        check_city(text)
    # The four keys, their quotes and separators are forced: at least a dozen steps saved.
    assert steps[True] + 12 <= steps[False], steps


def test_logprob_requests_get_every_token_scored(engine: Engine) -> None:
    params = {"temperature": 0, "max_new_tokens": 120, "json_schema": json.dumps(CITY)}
    out = engine.generate(chat(engine, "Oslo as JSON."), params, return_logprob=True)
    check_city(out["text"])
    logprobs = out["meta_info"]["output_token_logprobs"]
    assert len(logprobs) == len(out["output_ids"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"regex": "a[b"}, "invalid regex"),
        ({"json_schema": "{"}, "invalid json_schema"),
        ({"regex": "a", "ebnf": 'root ::= "a"'}, "at most one"),
    ],
)
def test_bad_grammar_is_a_clear_error(engine: Engine, params: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        engine.generate("Hello", params)
    out = engine.generate("Hello", {"temperature": 0, "max_new_tokens": 4, "regex": "[a-z]+"})
    assert re.fullmatch("[a-z]+", out["text"])
