"""The native API in SGLang's shapes: /generate and the operational endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..output import RequestOutputBuilder
from ..request_builder import InvalidRequestError, parse_sampling_params
from .body import json_response, read_json, until_disconnect
from .errors import ApiError, invalid_request
from .generation import Generation, run_all
from .protocol import (
    AbortRequest,
    AbortResponse,
    FlushCacheResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelInfo,
    ServerInfo,
)
from .sse import stream_sse
from .state import ServerState

T = TypeVar("T")


def state_of(request: Request) -> ServerState:
    return request.app.state.server


async def generate(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, GenerateRequest, state.config.max_body_bytes)
    try:
        generations, single = build_generations(state, body)
    except InvalidRequestError as exc:
        rename = {"input_ids": "text"} if body.text is not None else None
        raise invalid_request(exc, rename) from exc
    if body.stream:
        return await stream_generate(request, generations, single, body.return_text_in_logprobs)
    outputs = await until_disconnect(request, run_all(generations))
    results = [response_of(state, o, body.return_text_in_logprobs) for o in outputs]
    return json_response(results[0] if single else results)


def build_generations(state: ServerState, body: GenerateRequest) -> tuple[list[Generation], bool]:
    """One Generation per (prompt, sample); `single` when the answer is one object, not a list."""
    prompts, single = prompt_ids(state, body)
    count = len(prompts)
    sampling = per_item(body.sampling_params, count, "sampling_params")
    rids = per_item(body.rid, count, "rid")
    logprob = per_item(body.return_logprob, count, "return_logprob")
    start_len = per_item(body.logprob_start_len, count, "logprob_start_len")
    top_num = per_item(body.top_logprobs_num, count, "top_logprobs_num")
    generations = []
    for i, ids in enumerate(prompts):
        params = parse_sampling_params(sampling[i])
        for j in range(max(params.n, 1)):
            rid = rids[i] or state.new_rid("gen")
            sample = params
            if params.n > 1:
                rid = f"{rid}-{j}"
                if params.seed is not None:  # distinct yet reproducible samples
                    sample = msgspec.structs.replace(params, seed=params.seed + j)
            req = state.builder.build(
                rid,
                ids,
                sample,
                return_logprob=logprob[i],
                logprob_start_len=start_len[i],
                top_logprobs_num=top_num[i],
                stream=body.stream,
            )
            generations.append(Generation(state, req))
    return generations, single and len(generations) == 1


def prompt_ids(state: ServerState, body: GenerateRequest) -> tuple[list[list[int]], bool]:
    if (body.text is None) == (body.input_ids is None):
        raise ApiError(400, "pass exactly one of `text` and `input_ids`", "text")
    if body.text is not None:
        if isinstance(body.text, str):
            return [state.builder.encode(body.text)], True
        if not body.text:
            raise ApiError(400, "`text` is an empty list", "text")
        return [state.builder.encode(t) for t in body.text], False
    ids = body.input_ids
    assert ids is not None
    if ids and all(isinstance(x, list) for x in ids):
        return [list(x) for x in ids], False
    return [ids], True  # the builder checks that every entry is an in-vocabulary int


def per_item(value: T | list[T] | None, count: int, name: str) -> list[Any]:
    """A per-prompt field: a list must match the batch; a scalar applies to every prompt."""
    if isinstance(value, list):
        if len(value) != count:
            raise ApiError(400, f"`{name}` has {len(value)} entries for {count} prompts", name)
        return value
    return [value] * count


def response_of(
    state: ServerState, output: RequestOutputBuilder, with_text: bool, index: int | None = None
) -> GenerateResponse:
    result = output.result()
    if with_text:
        add_logprob_texts(state, result["meta_info"])
    return GenerateResponse(result["text"], result["output_ids"], result["meta_info"], index)


def add_logprob_texts(state: ServerState, meta: dict[str, Any]) -> None:
    """SGLang's `return_text_in_logprobs`: the third entry of each (logprob, id, text) triple."""
    texts = state.token_texts

    def fill(entries: list[Any] | None) -> list[Any] | None:
        if entries is None:
            return None
        return [(lp, tok, texts.text(tok)) for lp, tok, _ in entries]

    for key in ("output_token_logprobs", "input_token_logprobs"):
        if key in meta:
            meta[key] = fill(meta[key])
    for key in ("output_top_logprobs", "input_top_logprobs"):
        if key in meta:
            meta[key] = [fill(row) for row in meta[key]]


async def stream_generate(
    request: Request, gens: list[Generation], single: bool, with_text: bool
) -> Response:
    """SSE chunks in SGLang's style: each carries the cumulative text and meta_info so far."""
    state = state_of(request)

    def render(index: int, _delta: str) -> list[GenerateResponse]:
        position = None if single else index
        return [response_of(state, gens[index].output, with_text, position)]

    return await stream_sse(request, [g.stream() for g in gens], render)


# --- operational endpoints ---------------------------------------------------------------------


async def health(request: Request) -> Response:
    state = state_of(request)
    if state.healthy:
        return json_response(HealthResponse("ok"))
    reason = state.death_reason or (state.tm.error if state.tm else "starting")
    return json_response(HealthResponse("unhealthy", reason), 503)


async def health_generate(request: Request) -> Response:
    """Healthy only if a one-token greedy generation completes in time."""
    state = state_of(request)
    req = state.builder.build(
        state.new_rid("health"),
        state.builder.encode("ping") or [0],
        {"max_new_tokens": 1, "temperature": 0.0},
    )
    try:
        await asyncio.wait_for(Generation(state, req).run(), state.config.health_generate_timeout_s)
    except (ApiError, asyncio.TimeoutError) as exc:
        message = exc.message if isinstance(exc, ApiError) else "generation timed out"
        return json_response(HealthResponse("unhealthy", message), 503)
    return json_response(HealthResponse("ok"))


async def get_model_info(request: Request) -> Response:
    state = state_of(request)
    info = ModelInfo(
        model_path=state.model_path,
        tokenizer_path=state.tokenizer_path or state.model_path,
        served_model_name=state.model_name,
        chat_template=getattr(state.tokenizer, "chat_template", None),
        bos_token=getattr(state.tokenizer, "bos_token", None),
        eos_token=getattr(state.tokenizer, "eos_token", None),
    )
    return json_response(info)


async def get_server_info(request: Request) -> Response:
    state = state_of(request)
    scheduler = await state.scheduler_stats() if state.healthy else None
    info = ServerInfo(
        server_args=state.public_args(),
        runtime=state.info,
        http=dataclasses.asdict(state.config),
        scheduler=scheduler,
        healthy=state.healthy,
    )
    return json_response(info)


async def flush_cache(request: Request) -> Response:
    if await state_of(request).manager().flush_cache():
        return json_response(FlushCacheResponse(True, "the radix cache was flushed"))
    raise ApiError(400, "cannot flush the cache while requests are running", code="busy")


async def abort_request(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, AbortRequest, state.config.max_body_bytes)
    tm = state.manager()
    known = body.rid in tm.queues  # its finish is then abort(code=client): an answer, not an error
    await tm.abort(body.rid)
    message = "abort sent" if known else f"no request {body.rid!r} is in flight"
    return json_response(AbortResponse(known, message))
