"""The tool-calling helpers alone: planning, prompt rendering and output parsing."""

from __future__ import annotations

import json

import msgspec
import pytest

from radixserve.runtime.constrained.grammar import compile_grammar
from radixserve.runtime.server.http.errors import ApiError
from radixserve.runtime.server.http.openai_protocol import ChatCompletionRequest
from radixserve.runtime.server.http.openai_tools import (
    ToolPlan,
    parse_tool_calls,
    plan_tools,
    render_messages,
)
from tests.runtime.server.http.test_tool_calls import CALCULATOR, WEATHER


def request(**fields: object) -> ChatCompletionRequest:
    body = {"messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.convert(body, ChatCompletionRequest)


def test_plans() -> None:
    assert plan_tools(request()).mode == "none"
    assert plan_tools(request(tools=[WEATHER])).mode == "auto"
    assert plan_tools(request(tools=[WEATHER], tool_choice="none")).mode == "none"
    forced = plan_tools(request(tools=[WEATHER, CALCULATOR], tool_choice="required"))
    schema = json.loads(forced.json_schema)
    assert forced.mode == "forced" and schema["type"] == "array" and schema["minItems"] == 1
    assert len(schema["items"]["anyOf"]) == 2
    compile_grammar("json_schema", forced.json_schema)  # a schema the grammar backend accepts
    named = plan_tools(
        request(
            tools=[WEATHER, CALCULATOR],
            tool_choice={"type": "function", "function": {"name": "add"}},
        )
    )
    schema = json.loads(named.json_schema)
    assert schema["properties"]["name"] == {"const": "add"} and not named.parallel


def test_unknown_named_tool_is_a_400() -> None:
    with pytest.raises(ApiError, match="not in tools") as error:
        plan_tools(
            request(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}})
        )
    assert error.value.status == 400 and error.value.param == "tool_choice"


def test_bad_tool_name_fails_decoding() -> None:
    bad = {"type": "function", "function": {"name": "has space"}}
    with pytest.raises(msgspec.ValidationError, match="tools"):
        request(tools=[bad])


def test_rendering_without_template_support_adds_an_instruction() -> None:
    plan = plan_tools(request(tools=[WEATHER]))
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]
    out, args = render_messages(messages, plan, template_takes_tools=False)
    assert args == {}
    assert out[0]["content"].startswith("Be brief.") and "get_weather" in out[0]["content"]
    assert (
        out[1]["content"]
        == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    out, args = render_messages([{"role": "user", "content": "x"}], plan, template_takes_tools=True)
    assert args == {"tools": plan.tools} and out == [{"role": "user", "content": "x"}]


def test_parse_auto_output() -> None:
    plan = ToolPlan([WEATHER], "auto")
    text = 'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    content, calls = parse_tool_calls(text, plan)
    assert content == "Let me check." and len(calls) == 1
    assert json.loads(calls[0].function.arguments) == {"city": "Rome"}
    # Unknown tools and broken JSON stay content.
    for text in (
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
        "<tool_call>{oops</tool_call>",
    ):
        assert parse_tool_calls(text, plan) == (text, [])
    two = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>' * 2
    assert len(parse_tool_calls(two, plan)[1]) == 2
    assert len(parse_tool_calls(two, ToolPlan([WEATHER], "auto", parallel=False))[1]) == 1


def test_parse_forced_output() -> None:
    plan = ToolPlan([WEATHER], "forced", json_schema="{}")
    content, calls = parse_tool_calls('[{"name": "get_weather", "arguments": {"city": "A"}}]', plan)
    assert content is None and calls[0].function.name == "get_weather"
    assert parse_tool_calls('{"name": "get_weather", "arg', plan) == (
        '{"name": "get_weather", "arg',
        [],
    )
