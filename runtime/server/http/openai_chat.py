"""POST /v1/chat/completions: the tokenizer's chat template, OpenAI's chat and chunk shapes."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..request_builder import InvalidRequestError
from .body import json_response, read_json, until_disconnect
from .errors import ApiError, invalid_request
from .generation import Generation, run_all
from .native import state_of
from .openai_api import (
    CHAT_FIELDS,
    check_model,
    choice_rid,
    created_now,
    finish_reason,
    include_usage,
    sampling_dict,
    usage_of,
)
from .openai_logprobs import (
    LogprobCursor,
    chat_logprobs,
    output_entries,
)
from .openai_protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessage,
    ChatMessageOut,
    ChatStreamChoice,
    ToolCallDelta,
)
from .openai_tools import (
    ToolPlan,
    parse_tool_calls,
    plan_tools,
    render_messages,
)
from .sse import stream_sse
from .state import ServerState

ROLE = "assistant"


async def chat_completions(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, ChatCompletionRequest, state.config.max_body_bytes)
    check_model(state, body.model)
    if body.top_logprobs and not body.logprobs:
        raise ApiError(400, "`top_logprobs` needs `logprobs: true`", "top_logprobs")
    tools = plan_tools(body)
    messages, template_args = render_messages(
        [template_message(i, m) for i, m in enumerate(body.messages)],
        tools,
        state.builder.chat_template_takes_tools,
    )
    try:
        ids = state.builder.encode_chat(messages, **template_args)
        gens = build_generations(state, body, ids, tools)
    except InvalidRequestError as exc:
        raise invalid_request(exc, CHAT_FIELDS) from exc
    if body.stream:
        return await stream_chat(request, state, body, gens, tools)
    outputs = await until_disconnect(request, run_all(gens))
    choices = []
    for index, output in enumerate(outputs):
        logprobs = None
        if body.logprobs:
            logprobs = chat_logprobs(state.token_texts, output_entries(output))
        message, reason = final_message(output, tools)
        choices.append(ChatChoice(index, message, logprobs, reason))
    response = ChatCompletionResponse(
        state.new_rid("chatcmpl"),
        created_now(),
        state.model_name,
        choices,
        usage_of(outputs, body.n),
    )
    return json_response(response)


def final_message(output: Any, tools: ToolPlan) -> tuple[ChatMessageOut, str | None]:
    """The finished choice's message and finish reason, with any tool calls parsed out."""
    reason = finish_reason(output)
    if not tools.active or reason != "stop":
        return ChatMessageOut(ROLE, output.text), reason
    content, calls = parse_tool_calls(output.text, tools)
    if not calls:
        return ChatMessageOut(ROLE, content), reason
    return ChatMessageOut(ROLE, content, calls), "tool_calls"


def template_message(index: int, message: ChatMessage) -> dict[str, Any]:
    """A message as chat templates expect it: a role and plain-text content (plus an
    assistant's earlier tool calls and a tool message's call id). As in OpenAI's API, only an
    assistant message that carries `tool_calls` may leave out its content."""
    content = message.content
    if content is None and not (message.role == "assistant" and message.tool_calls):
        raise ApiError(
            400,
            f"messages[{index}] ({message.role}) has no `content`; only an assistant message "
            "that carries `tool_calls` may leave it out",
            f"messages[{index}].content",
        )
    if isinstance(content, list):
        if any(part.type != "text" for part in content):
            raise ApiError(400, "only text content parts are supported", "messages")
        content = "".join(part.text or "" for part in content)
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": content or ""}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [msgspec.to_builtins(call) for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def build_generations(
    state: ServerState, body: ChatCompletionRequest, ids: list[int], tools: ToolPlan
) -> list[Generation]:
    max_new = body.max_completion_tokens
    if max_new is None:
        max_new = body.max_tokens
    if max_new is None:  # no limit but the context (and a pool that must hold it)
        room = min(state.builder.context_len, state.builder.pool_tokens)
        max_new = max(room - len(ids), 0)
    gens = []
    for copy in range(body.n):
        sampling = sampling_dict(body, max_new, copy)
        if tools.json_schema is not None:  # a forced call: its JSON is the whole output
            sampling["json_schema"] = tools.json_schema
        req = state.builder.build(
            choice_rid(state, body, "chatcmpl", copy),
            ids,
            sampling,
            return_logprob=body.logprobs,
            top_logprobs_num=(body.top_logprobs or 0) if body.logprobs else 0,
            stream=body.stream,
        )
        gens.append(Generation(state, req))
    return gens


async def stream_chat(
    request: Request,
    state: ServerState,
    body: ChatCompletionRequest,
    gens: list[Generation],
    tools: ToolPlan,
) -> Response:
    cid, created, model = state.new_rid("chatcmpl"), created_now(), state.model_name
    cursors = [LogprobCursor() for _ in gens]

    def chunk(
        index: int, delta: ChatDelta, logprobs: Any = None, reason: str | None = None
    ) -> ChatCompletionChunk:
        choice = ChatStreamChoice(index, delta, logprobs, reason)
        return ChatCompletionChunk(cid, created, model, [choice])

    def pieces(index: int, text: str) -> list[ChatCompletionChunk]:
        output, cursor = gens[index].output, cursors[index]
        out = []
        if not cursor.started:  # OpenAI opens each choice with the role and empty content
            cursor.started = True
            out.append(chunk(index, ChatDelta(role=ROLE, content="")))
        reason = finish_reason(output)
        if tools.active:
            # Tool calls are known only once the output is complete: send the choice whole.
            return out + ([] if reason is None else whole_choice(index, output))
        entries = output_entries(output, cursor.tokens_sent)
        cursor.tokens_sent = len(output.output_logprobs)
        if text or entries:
            logprobs = chat_logprobs(state.token_texts, entries) if body.logprobs else None
            out.append(chunk(index, ChatDelta(content=text), logprobs))
        if reason is not None:
            out.append(chunk(index, ChatDelta(), None, reason))
        return out

    def whole_choice(index: int, output: Any) -> list[ChatCompletionChunk]:
        message, reason = final_message(output, tools)
        logprobs = None
        if body.logprobs:
            logprobs = chat_logprobs(state.token_texts, output_entries(output))
        calls = [
            ToolCallDelta(index=i, id=c.id, function=c.function)
            for i, c in enumerate(message.tool_calls or [])
        ]
        delta = ChatDelta(content=message.content, tool_calls=calls or None)
        return [chunk(index, delta, logprobs), chunk(index, ChatDelta(), None, reason)]

    def usage_chunk() -> list[ChatCompletionChunk]:
        if not include_usage(body):
            return []
        usage = usage_of([g.output for g in gens], body.n)
        return [ChatCompletionChunk(cid, created, model, [], usage)]

    return await stream_sse(request, [g.stream() for g in gens], pieces, usage_chunk)
