"""POST /v1/completions: OpenAI's legacy completions, echo and prompt logprobs included.

`echo=True, max_tokens=0, logprobs=k` is the loglikelihood-evaluation case: nothing is generated
and the answer carries the prompt's own token logprobs.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ...config.tokenizer import decode_text
from ..request_builder import InvalidRequestError
from .body import json_response, read_json, until_disconnect
from .errors import ApiError, invalid_request
from .generation import Generation, run_all
from .native import state_of
from .openai_api import (
    COMPLETION_FIELDS,
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
    completion_logprobs,
    output_entries,
    prompt_entries,
)
from .openai_protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
)
from .sse import stream_sse
from .state import ServerState

Prompt = tuple[list[int], str]  # token ids, and the text echo=True puts in front


async def completions(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, CompletionRequest, state.config.max_body_bytes)
    check_model(state, body.model)
    try:
        prompts = completion_prompts(state, body.prompt, body.echo)
        gens = build_generations(state, body, prompts)
    except InvalidRequestError as exc:
        raise invalid_request(exc, COMPLETION_FIELDS) from exc
    if body.stream:
        return await stream_completions(request, state, body, prompts, gens)
    outputs = await until_disconnect(request, run_all(gens))
    choices = []
    for index, output in enumerate(outputs):
        echo = prompts[index // body.n][1] if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            entries = (prompt_entries(output) if body.echo else []) + output_entries(output)
            logprobs = completion_logprobs(state.token_texts, entries)
        choices.append(CompletionChoice(index, echo + output.text, logprobs, finish_reason(output)))
    response = CompletionResponse(
        state.new_rid("cmpl"), created_now(), state.model_name, choices, usage_of(outputs, body.n)
    )
    return json_response(response)


def completion_prompts(state: ServerState, prompt: str | list[Any], echo: bool) -> list[Prompt]:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    builder = state.builder
    if isinstance(prompt, str):
        return [(builder.encode(prompt), prompt)]
    if not prompt:
        raise ApiError(400, "`prompt` is an empty list", "prompt")
    if all(isinstance(p, str) for p in prompt):
        return [(builder.encode(p), p) for p in prompt]
    if all(isinstance(p, list) for p in prompt):
        token_lists = [builder.check_input_ids(p) for p in prompt]
    elif all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        token_lists = [builder.check_input_ids(prompt)]
    else:
        raise ApiError(
            400,
            "`prompt` must be a string, a list of strings, a list of token ids or a list of "
            "token-id lists",
            "prompt",
        )
    return [(ids, decode_text(state.tokenizer, ids) if echo else "") for ids in token_lists]


def build_generations(
    state: ServerState, body: CompletionRequest, prompts: list[Prompt]
) -> list[Generation]:
    max_new = body.max_tokens
    if max_new is None:
        max_new = state.config.completions_default_max_tokens
    with_logprobs = body.logprobs is not None
    gens = []
    for p, (ids, _) in enumerate(prompts):
        for copy in range(body.n):
            req = state.builder.build(
                choice_rid(state, body, "cmpl", p * body.n + copy),
                ids,
                sampling_dict(body, max_new, copy),
                return_logprob=with_logprobs,
                logprob_start_len=0 if with_logprobs and body.echo else -1,
                top_logprobs_num=body.logprobs or 0,
                stream=body.stream,
            )
            gens.append(Generation(state, req))
    return gens


async def stream_completions(
    request: Request,
    state: ServerState,
    body: CompletionRequest,
    prompts: list[Prompt],
    gens: list[Generation],
) -> Response:
    cid, created, model = state.new_rid("cmpl"), created_now(), state.model_name
    cursors = [LogprobCursor() for _ in gens]

    def chunks(index: int, delta: str) -> list[CompletionResponse]:
        output, cursor = gens[index].output, cursors[index]
        entries = output_entries(output, cursor.tokens_sent)
        if body.echo and not cursor.started:
            delta = prompts[index // body.n][1] + delta
            entries = prompt_entries(output) + entries
        cursor.started = True
        cursor.tokens_sent = len(output.output_logprobs)
        reason = finish_reason(output)
        if not delta and not entries and reason is None:
            return []  # the detokenizer held text back (a partial character or stop string)
        logprobs = None
        if body.logprobs is not None:
            logprobs = completion_logprobs(state.token_texts, entries, cursor)
        choice = CompletionChoice(index, delta, logprobs, reason)
        return [CompletionResponse(cid, created, model, [choice])]

    def usage_chunk() -> list[CompletionResponse]:
        if not include_usage(body):
            return []
        usage = usage_of([g.output for g in gens], body.n)
        return [CompletionResponse(cid, created, model, [], usage)]

    return await stream_sse(request, [g.stream() for g in gens], chunks, usage_chunk)
