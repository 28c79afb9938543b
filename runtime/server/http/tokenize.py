"""POST /tokenize, POST /detokenize, GET /tokenizer_info: the server's own tokenizer over HTTP.

vLLM's shapes, which SGLang shares for /tokenize: clients then need no local copy of the
tokenizer. lm-evaluation-harness's default `tokenizer_backend=auto` probes /tokenizer_info and
/tokenize and, when both answer, tokenizes every request here (its "remote" backend), so a
model served from a GGUF file needs no tokenizer directory on the evaluating machine.
"""

from __future__ import annotations

from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response

from ...config.tokenizer import decode_text
from .body import json_response, read_json
from .errors import ApiError
from .native import state_of
from .state import check_model


class TokenizeRequest(Struct, kw_only=True):
    prompt: str | list[str]
    model: str | None = None
    add_special_tokens: bool = True


class TokenizeResponse(Struct):
    tokens: list[int] | list[list[int]]  # one list per prompt when `prompt` was a list
    count: int | list[int]
    max_model_len: int


class DetokenizeRequest(Struct, kw_only=True):
    tokens: list[int]
    model: str | None = None
    skip_special_tokens: bool = False


class DetokenizeResponse(Struct):
    prompt: str  # vLLM's name, read by lm-evaluation-harness
    text: str  # SGLang's name for the same text


class TokenizerInfo(Struct):
    """What lm-evaluation-harness reads (special tokens, chat template), as vLLM names it."""

    tokenizer_class: str
    eos_token: str | None
    bos_token: str | None
    pad_token: str | None
    unk_token: str | None
    chat_template: str | None
    model_max_length: int


async def tokenize(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, TokenizeRequest, state.config.max_body_bytes)
    check_model(state, body.model)
    tokenizer = state.tokenizer

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=body.add_special_tokens))

    context_len = state.builder.context_len
    if isinstance(body.prompt, str):
        ids = encode(body.prompt)
        return json_response(TokenizeResponse(ids, len(ids), context_len))
    batch = [encode(text) for text in body.prompt]
    return json_response(TokenizeResponse(batch, [len(ids) for ids in batch], context_len))


async def detokenize(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, DetokenizeRequest, state.config.max_body_bytes)
    check_model(state, body.model)
    vocab_size = state.builder.vocab_size
    for position, token in enumerate(body.tokens):
        if not 0 <= token < vocab_size:
            raise ApiError(
                400,
                f"token id {token} at position {position} is outside the vocabulary "
                f"[0, {vocab_size})",
                "tokens",
            )
    text = decode_text(state.tokenizer, body.tokens, skip_special_tokens=body.skip_special_tokens)
    return json_response(DetokenizeResponse(text, text))


async def tokenizer_info(request: Request) -> Response:
    state = state_of(request)
    tokenizer = state.tokenizer
    template = getattr(tokenizer, "chat_template", None)
    info = TokenizerInfo(
        tokenizer_class=type(tokenizer).__name__,
        eos_token=_token(tokenizer.eos_token),
        bos_token=_token(tokenizer.bos_token),
        pad_token=_token(tokenizer.pad_token),
        unk_token=_token(tokenizer.unk_token),
        chat_template=template if isinstance(template, str) else None,
        model_max_length=state.builder.context_len,
    )
    return json_response(info)


def _token(value: object) -> str | None:
    return value if isinstance(value, str) else None
