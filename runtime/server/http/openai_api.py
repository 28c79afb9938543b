"""OpenAI-compatible API: /v1/models and what completions and chat share.

Each of the `n` choices of each prompt is its own `GenerateReq`; the copies of a prompt share
its KV through the radix cache. Choice `index` = prompt position * n + copy, as in OpenAI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..output import RequestOutputBuilder
from .body import json_response
from .errors import ApiError
from .native import state_of
from .openai_protocol import (
    ModelCard,
    ModelList,
    PromptTokensDetails,
    SamplingFields,
    Usage,
)
from .state import ServerState
from .state import check_model as check_model  # completions and chat import it from here

# The request builder's field names, as the OpenAI API calls them.
COMPLETION_FIELDS = {"input_ids": "prompt", "text": "prompt", "max_new_tokens": "max_tokens"}
CHAT_FIELDS = {"input_ids": "messages", "text": "messages", "max_new_tokens": "max_tokens"}


async def list_models(request: Request) -> Response:
    state = state_of(request)
    card = ModelCard(
        id=state.model_name,
        created=int(time.time()),
        root=state.model_path,
        max_model_len=state.builder.context_len,
    )
    return json_response(ModelList([card]))


def sampling_dict(body: SamplingFields, max_new_tokens: int, copy: int) -> dict[str, Any]:
    """SGLang sampling parameters of one choice; a seeded request gives each copy its own seed
    so `n` seeded choices differ yet reproduce."""
    params: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "repetition_penalty": body.repetition_penalty,
        "stop": body.stop,
        "stop_token_ids": body.stop_token_ids,
        "ignore_eos": body.ignore_eos,
        "skip_special_tokens": body.skip_special_tokens,
        "logit_bias": body.logit_bias,
        "min_new_tokens": min(body.min_tokens, max_new_tokens),
    }
    if body.seed is not None:
        params["seed"] = body.seed + copy
    params.update(grammar_fields(body))
    return params


def grammar_fields(body: SamplingFields) -> dict[str, str]:
    """`response_format`, `regex` and `ebnf` as SGLang sampling parameters (at most one may be
    set: SamplingParams.validate says so by name)."""
    fields = {k: v for k, v in (("regex", body.regex), ("ebnf", body.ebnf)) if v is not None}
    response_format = body.response_format
    if response_format is None or response_format.type == "text":
        return fields
    if response_format.type == "json_object":
        fields["json_schema"] = json.dumps({"type": "object"})
        return fields
    spec = response_format.json_schema
    if spec is None or spec.schema_ is None:
        raise ApiError(
            400,
            "response_format of type json_schema needs json_schema.schema",
            "response_format",
        )
    fields["json_schema"] = json.dumps(spec.schema_)
    return fields


def choice_rid(state: ServerState, body: SamplingFields, prefix: str, index: int) -> str:
    base = body.rid or state.new_rid(prefix)
    return f"{base}-{index}"


def finish_reason(output: RequestOutputBuilder) -> str | None:
    return output.finish.type if output.finish is not None else None


def usage_of(outputs: Sequence[RequestOutputBuilder], n: int) -> Usage:
    """Prompt tokens count once per prompt (not per choice); completion tokens per choice."""
    per_prompt = outputs[::n]
    prompt = sum(len(o.req.input_ids) for o in per_prompt)
    cached = sum(o.last.cached_tokens for o in per_prompt if o.last is not None)
    completion = sum(len(o.output_ids) for o in outputs)
    return Usage(prompt, completion, prompt + completion, PromptTokensDetails(cached))


def include_usage(body: SamplingFields) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


def created_now() -> int:
    return int(time.time())
