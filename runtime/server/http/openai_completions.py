"""POST /v1/completions: OpenAI's legacy completions, echo and prompt logprobs included.

`echo=True, max_tokens=0, logprobs=k` is the loglikelihood-evaluation case: nothing is generated
and the answer carries the prompt's own token logprobs (lm-evaluation-harness sends
`max_tokens=1` and drops the last entry). Prompt logprobs already computed for a prompt's prefix
come from the server's `PromptLogprobCache`; the scheduler computes only the rest, reusing the
radix cache's KV for the known prefix (the few-shot examples every document of a task shares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ...config.tokenizer import decode_text
from ..output import RequestOutputBuilder
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
    TokenLogprob,
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


@dataclass(slots=True)
class Prompt:
    ids: list[int]
    echo_text: str  # what echo=True puts in front of the output
    # The leading prompt logprobs the cache already had (echo + logprobs only): the scheduler
    # is asked for the rest (`logprob_start_len = len(known)`).
    known: list[TokenLogprob] = field(default_factory=list)


async def completions(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, CompletionRequest, state.config.max_body_bytes)
    check_model(state, body.model)
    try:
        prompts = completion_prompts(state, body.prompt, body.echo)
        if body.echo and body.logprobs is not None:
            for prompt in prompts:
                prompt.known = known_prompt_logprobs(state, prompt.ids, body.logprobs)
        gens = build_generations(state, body, prompts)
    except InvalidRequestError as exc:
        raise invalid_request(exc, COMPLETION_FIELDS) from exc
    if body.stream:
        return await stream_completions(request, state, body, prompts, gens)
    outputs = await until_disconnect(request, run_all(gens))
    choices = []
    for index, output in enumerate(outputs):
        prompt = prompts[index // body.n]
        echo = prompt.echo_text if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            entries = echo_entries(state, body, prompt, output) + output_entries(output)
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
        return [Prompt(builder.encode(prompt), prompt)]
    if not prompt:
        raise ApiError(400, "`prompt` is an empty list", "prompt")
    if all(isinstance(p, str) for p in prompt):
        return [Prompt(builder.encode(p), p) for p in prompt]
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
    return [Prompt(ids, decode_text(state.tokenizer, ids) if echo else "") for ids in token_lists]


def known_prompt_logprobs(state: ServerState, ids: list[int], top_k: int) -> list[TokenLogprob]:
    """The cached leading entries, fewer than the prompt's tokens: the scheduler computes at
    least the last one (`logprob_start_len` must name a prompt position)."""
    if len(ids) < 2:
        return []
    return state.prompt_logprobs.lookup(ids, top_k)[: len(ids) - 1]


def echo_entries(
    state: ServerState, body: CompletionRequest, prompt: Prompt, output: RequestOutputBuilder
) -> list[TokenLogprob]:
    """The prompt's logprob entries (none without echo): the known ones, then the scheduler's;
    a complete list goes into the cache for later prompts with the same prefix."""
    if not body.echo or body.logprobs is None:
        return []
    entries = prompt.known + prompt_entries(output)
    if len(entries) == len(prompt.ids):
        state.prompt_logprobs.store(prompt.ids, entries, body.logprobs)
    return entries


def build_generations(
    state: ServerState, body: CompletionRequest, prompts: list[Prompt]
) -> list[Generation]:
    max_new = body.max_tokens
    if max_new is None:
        max_new = state.config.completions_default_max_tokens
    with_logprobs = body.logprobs is not None
    gens = []
    for p, prompt in enumerate(prompts):
        for copy in range(body.n):
            req = state.builder.build(
                choice_rid(state, body, "cmpl", p * body.n + copy),
                prompt.ids,
                sampling_dict(body, max_new, copy),
                return_logprob=with_logprobs,
                logprob_start_len=len(prompt.known) if with_logprobs and body.echo else -1,
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
            prompt = prompts[index // body.n]
            delta = prompt.echo_text + delta
            entries = echo_entries(state, body, prompt, output) + entries
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
