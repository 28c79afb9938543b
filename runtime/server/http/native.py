"""The native API in SGLang's shapes: /generate (the operational endpoints are in
operations.py)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..output import RequestOutputBuilder
from ..request_builder import InvalidRequestError, parse_sampling_params
from .body import json_response, read_json, until_disconnect
from .errors import ApiError, invalid_request
from .generation import Generation, run_all
from .protocol import GenerateRequest, GenerateResponse
from .sglang_fields import refuse_unsupported, sglang_sampling
from .sse import stream_sse
from .state import ServerState, check_model

T = TypeVar("T")


def state_of(request: Request) -> ServerState:
    return request.app.state.server


async def generate(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, GenerateRequest, state.config.max_body_bytes)
    refuse_unsupported(body)
    check_model(state, body.model)
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
    logprob = per_item(body.return_logprob, count, "return_logprob", False)
    start_len = per_item(body.logprob_start_len, count, "logprob_start_len", -1)
    top_num = per_item(body.top_logprobs_num, count, "top_logprobs_num", 0)
    replica = pinned_replica(state, body)
    generations = []
    for i, ids in enumerate(prompts):
        params = parse_sampling_params(sglang_sampling(sampling[i]))
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
            generation = Generation(state, req, replica=replica, log_metrics=body.log_metrics)
            generations.append(generation)
    return generations, single and len(generations) == 1


def pinned_replica(state: ServerState, body: GenerateRequest) -> int | None:
    """The data-parallel replica the client named (SGLang's two spellings), checked."""
    named = {
        name: rank
        for name, rank in (
            ("routed_dp_rank", body.routed_dp_rank),
            ("data_parallel_rank", body.data_parallel_rank),
        )
        if rank is not None
    }
    if len(set(named.values())) > 1:
        raise ApiError(400, f"the replica is named twice, differently: {named}", "routed_dp_rank")
    for name, rank in named.items():
        if not 0 <= rank < state.args.dp_size:
            raise ApiError(
                400,
                f"`{name}` is {rank}; this server has {state.args.dp_size} data-parallel "
                f"replica(s), ranks 0 to {state.args.dp_size - 1}",
                name,
            )
        return rank
    return None


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


def per_item(
    value: T | list[T] | None, count: int, name: str, default: T | None = None
) -> list[Any]:
    """A per-prompt field: a list must match the batch; a scalar applies to every prompt;
    None (SGLang's "unset", also inside a list) is `default`."""
    if isinstance(value, list):
        if len(value) != count:
            raise ApiError(400, f"`{name}` has {len(value)} entries for {count} prompts", name)
        return [default if item is None else item for item in value]
    return [default if value is None else value] * count


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
