"""Tool calling on /v1/chat/completions through the official client against a real server:
forced calls (required, named) always parse and follow the tool's schema, auto mode, streaming,
a conversation carrying earlier calls and their results, and 400s for inconsistent tool options."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.runtime.server.http.conftest import ServerProcess

pytestmark = pytest.mark.slow
MODEL = "SmolLM2-135M-Instruct"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Adds two integers",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": -999, "maximum": 999},
                "b": {"type": "integer", "minimum": -999, "maximum": 999},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key) as client:
        yield client


def check_weather_args(arguments: str) -> None:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")


def test_required_tool_call_parses_and_follows_the_schema(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, CALCULATOR],
        tool_choice="required",
        temperature=0,
        max_tokens=80,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in ("get_weather", "add")
        if call.function.name == "get_weather":
            check_weather_args(call.function.arguments)
        else:
            assert set(json.loads(call.function.arguments)) == {"a", "b"}


def test_named_tool_choice_calls_that_tool_once(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 12 plus 30?"}],
        tools=[WEATHER, CALCULATOR],
        tool_choice={"type": "function", "function": {"name": "add"}},
        temperature=0,
        max_tokens=40,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1 and calls[0].function.name == "add"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args["a"], int) and isinstance(args["b"], int)


def test_streamed_tool_call(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=60,
            stream=True,
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    calls = [call for d in deltas for call in (d.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].index == 0
    check_weather_args(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_mode_answers_with_text_or_well_formed_calls(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], temperature=0, max_tokens=60
    )
    choice = reply.choices[0]
    if choice.finish_reason == "tool_calls":
        assert choice.message.tool_calls[0].function.name == "get_weather"
        json.loads(choice.message.tool_calls[0].function.arguments)
    else:
        assert choice.message.content and not choice.message.tool_calls


def test_conversation_with_an_earlier_call_and_its_result(oai: openai.OpenAI) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    }
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees"},
    ]
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_tokens=30,
    )
    assert reply.choices[0].message.content
    assert reply.choices[0].message.tool_calls is None
    # The earlier call and its result are part of the prompt.
    alone = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
    assert reply.usage.prompt_tokens > alone.usage.prompt_tokens + 15


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tool_choice": "required"}, "needs `tools`"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "not in tools",
        ),
        ({"tools": [WEATHER, WEATHER]}, "unique"),
        (
            {
                "tools": [WEATHER],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "cannot be combined",
        ),
    ],
)
def test_inconsistent_tool_options_are_400(oai: openai.OpenAI, options: dict, message: str) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, **options)
