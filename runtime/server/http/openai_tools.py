"""Tool (function) calling for /v1/chat/completions, on top of structured outputs.

The model sees the tools through its chat template when the template takes `tools`, otherwise
through a system instruction we add; either way it is asked to call a tool as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes / Qwen format).

* `tool_choice: "required"` or a named function: the output is constrained by a JSON schema to
  exactly such calls (a JSON array of them when `parallel_tool_calls`, else one object), so the
  arguments always parse and follow the tool's `parameters` schema.
* `tool_choice: "auto"` (the default with tools): the model writes freely; `<tool_call>` blocks
  whose JSON names a known tool become tool calls, the rest stays content.
* `tool_choice: "none"`: the tools are not shown and nothing is parsed.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import ApiError
from .openai_protocol import (
    ChatCompletionRequest,
    ToolCall,
    ToolCallFunction,
)

MAX_PARALLEL_CALLS = 8
TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
INSTRUCTION = (
    "You can call these tools (JSON schemas of their arguments):\n{tools}\n"
    'To call a tool, reply with <tool_call>{{"name": <tool name>, "arguments": '
    "<arguments object>}}</tool_call>, one block per call. Otherwise answer normally."
)


@dataclass(slots=True)
class ToolPlan:
    """What the request's tools mean for this generation."""

    tools: list[dict[str, Any]]  # OpenAI tool dicts, as chat templates take them
    mode: str  # "none", "auto", or "forced" (required or a named function)
    json_schema: str | None = None  # the constraint in forced mode
    parallel: bool = True

    @property
    def active(self) -> bool:
        return self.mode != "none"


def plan_tools(body: ChatCompletionRequest) -> ToolPlan:
    """Checks `tools` / `tool_choice` and decides the mode; ApiError 400 when they conflict."""
    tools = [msgspec.to_builtins(t) for t in body.tools or []]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise ApiError(400, f"tool names must be unique, got {names}", "tools")
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if tools else "none")
    if choice == "none":
        return ToolPlan([], "none")
    if not tools:
        raise ApiError(400, f"tool_choice {choice!r} needs `tools`", "tool_choice")
    if choice == "auto":
        return ToolPlan(tools, "auto", parallel=body.parallel_tool_calls)
    if body.response_format is not None and body.response_format.type != "text":
        raise ApiError(400, "response_format cannot be combined with a forced tool call", "tools")
    if body.regex is not None or body.ebnf is not None:
        raise ApiError(400, "regex / ebnf cannot be combined with a forced tool call", "tools")
    if choice == "required":
        chosen, parallel = tools, body.parallel_tool_calls
    else:
        name = choice.function.name  # a NamedToolChoice
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise ApiError(400, f"tool_choice names {name!r}, which is not in tools", "tool_choice")
        parallel = False
    schema = call_schema(chosen)
    if parallel:
        schema = {"type": "array", "items": schema, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    return ToolPlan(tools, "forced", json.dumps(schema), parallel)


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One call of any of `tools`: {"name": <its name>, "arguments": <its parameters>}."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def render_messages(
    messages: list[dict[str, Any]], plan: ToolPlan, template_takes_tools: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages (and extra template arguments) that show the model its tools and past calls."""
    out = []
    for message in messages:
        calls = message.pop("tool_calls", None)
        if calls and not template_takes_tools:
            blocks = "".join(
                "<tool_call>"
                + json.dumps({"name": c["function"]["name"], "arguments": arguments_of(c)})
                + "</tool_call>"
                for c in calls
            )
            message = {**message, "content": (message.get("content") or "") + blocks}
        elif calls:
            message = {**message, "tool_calls": calls}
        out.append(message)
    if not plan.active:
        return out, {}
    if template_takes_tools:
        return out, {"tools": plan.tools}
    listing = "\n".join(json.dumps(t["function"]) for t in plan.tools)
    instruction = INSTRUCTION.format(tools=listing)
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + instruction}
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out, {}


def arguments_of(call: dict[str, Any]) -> Any:
    """A past call's arguments as a value (OpenAI sends them as a JSON string)."""
    arguments = call["function"].get("arguments", "{}")
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return arguments


def new_call(name: str, arguments: Any) -> ToolCall:
    return ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}",
        function=ToolCallFunction(name=name, arguments=json.dumps(arguments)),
    )


def parse_tool_calls(text: str, plan: ToolPlan) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) from a finished output; calls is empty when the model made none."""
    if plan.mode == "forced":
        try:
            value = json.loads(text)
        except ValueError:
            return text, []  # cut off by max_tokens: the partial JSON stays content
        forced = value if isinstance(value, list) else [value]
        return None, [new_call(c["name"], c["arguments"]) for c in forced]
    if plan.mode != "auto":
        return text, []
    known = {t["function"]["name"] for t in plan.tools}
    calls: list[ToolCall] = []
    kept = []
    last = 0
    for match in TOOL_CALL.finditer(text):
        try:
            value = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(value, dict) or value.get("name") not in known:
            continue
        calls.append(new_call(value["name"], value.get("arguments", {})))
        kept.append(text[last : match.start()])
        last = match.end()
    if not calls:
        return text, []
    kept.append(text[last:])
    content = "".join(kept).strip()
    return content or None, calls if plan.parallel else calls[:1]
