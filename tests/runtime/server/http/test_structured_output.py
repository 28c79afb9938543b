"""Structured outputs over HTTP against a real server: native `regex` / `json_schema` / `ebnf`,
OpenAI `response_format` through the official client, streaming, and 400s for bad grammars."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.runtime.server.http.conftest import ServerProcess
from tests.runtime.server.http.test_native import sse_payloads

pytestmark = pytest.mark.slow
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
DATE = r"20[0-9]{2}-(0[1-9]|1[0-2])-[0-2][0-9]"


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key) as client:
        yield client


def test_native_regex_and_json_schema(client: httpx.Client) -> None:
    body = {
        "text": ["Today's date is", "A person, as JSON:"],
        "sampling_params": [
            {"temperature": 0, "max_new_tokens": 16, "regex": DATE},
            {"temperature": 0, "max_new_tokens": 40, "json_schema": PERSON},  # an object works too
        ],
    }
    response = client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    date, person = response.json()
    assert re.fullmatch(DATE, date["text"])
    value = json.loads(person["text"])
    assert set(value) == {"name", "age"} and 0 <= value["age"] <= 120
    assert person["meta_info"]["finish_reason"]["type"] == "stop"


def test_native_stream_follows_the_grammar(client: httpx.Client) -> None:
    body = {
        "text": "My favourite fruit:",
        "sampling_params": {
            "temperature": 0,
            "max_new_tokens": 16,
            "ebnf": 'root ::= ("apple" | "banana" | "cherry") "!"',
        },
        "stream": True,
    }
    with client.stream("POST", "/generate", json=body) as response:
        assert response.status_code == 200
        events = sse_payloads(response)
    assert re.fullmatch(r"(apple|banana|cherry)!", events[-1]["text"])


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"regex": "(open"}, "invalid regex"),
        ({"json_schema": "not json"}, "invalid json_schema"),
        ({"json_schema": "[]"}, "a JSON schema is an object"),
        ({"regex": "a", "json_schema": "{}"}, "at most one of regex, json_schema, ebnf"),
        ({"ebnf": "root ::= ("}, "invalid ebnf"),
    ],
)
def test_bad_grammar_is_a_400(client: httpx.Client, sampling: dict, message: str) -> None:
    response = client.post("/generate", json={"text": "Hi", "sampling_params": sampling})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert client.get("/health").status_code == 200


def test_openai_chat_response_format_json_schema(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    value = json.loads(reply.choices[0].message.content)
    assert set(value) == {"name", "age"}
    assert reply.choices[0].finish_reason == "stop"


def test_openai_completion_regex_and_chat_json_object(oai: openai.OpenAI) -> None:
    dated = oai.completions.create(
        model="SmolLM2-135M-Instruct",
        prompt="The meeting is on",
        temperature=0,
        max_tokens=16,
        extra_body={"regex": " " + DATE},  # SGLang's extra field
    )
    assert re.fullmatch(" " + DATE, dated.choices[0].text)
    reply = oai.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Describe a cat in JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_object"},
    )
    text = reply.choices[0].message.content
    assert text.startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_openai_bad_response_format_is_a_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        oai.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {"name": "x"}},
        )
    assert "json_schema.schema" in str(error.value)
    with pytest.raises(openai.BadRequestError, match="invalid json_schema"):
        oai.chat.completions.create(
            model="SmolLM2-135M-Instruct",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=5,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
            },
        )
