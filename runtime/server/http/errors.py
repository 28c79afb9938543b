"""Errors in OpenAI's body shape, for every endpoint: {"error": {message, type, param, code}}.

Handlers raise `ApiError`; `InvalidRequestError` from the request builder and msgspec's decode
errors are converted here, keeping the name of the offending field in `param`.
"""

from __future__ import annotations

import logging
import re

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..request_builder import InvalidRequestError

logger = logging.getLogger(__name__)

# msgspec ends its messages with "- at `$.messages[0].role`" or names a missing field.
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_TYPES = {401: "authentication_error", 404: "not_found_error", 503: "service_unavailable"}


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def payload(self) -> ErrorResponse:
        default = "invalid_request_error" if self.status < 500 else "server_error"
        kind = _TYPES.get(self.status, default)
        return ErrorResponse(ErrorDetail(self.message, kind, self.param, self.code))

    def response(self) -> Response:
        body = msgspec.json.encode(self.payload())
        return Response(body, status_code=self.status, media_type="application/json")


def decode_error(exc: msgspec.DecodeError) -> ApiError:
    """A body that is not JSON, or JSON of the wrong shape (wrong type, range, missing field)."""
    message = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return ApiError(400, f"the request body is not valid JSON: {message}", code="bad_json")
    found = _PATH.search(message) or _MISSING.search(message) or _UNKNOWN.search(message)
    param = found.group(1) if found else None
    return ApiError(400, f"invalid request: {message}", param, code="invalid_value")


def invalid_request(exc: InvalidRequestError, rename: dict[str, str] | None = None) -> ApiError:
    """The builder names its own fields (`input_ids`); an API may call them otherwise."""
    field = exc.field if exc.field is None or rename is None else rename.get(exc.field, exc.field)
    return ApiError(400, str(exc), field, code="invalid_value")


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def handle_invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequestError)
    return invalid_request(exc).response()


# What a client that reached a path we do not serve (sglang-router forwards /v1/embeddings,
# /v1/rerank, /v1/responses... to its workers) is told instead of a bare "Not Found".
SERVED = (
    "radixserve serves text generation: /generate, /v1/completions, /v1/chat/completions, "
    "/v1/models, and SGLang's operational endpoints (/health, /server_info, /model_info, "
    "/get_load, /flush_cache, /abort_request, /metrics), /debug/radix_tree and /dashboard"
)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no endpoint {request.url.path}: {SERVED}"
        return ApiError(404, message, code="unknown_endpoint").response()
    return ApiError(exc.status_code, str(exc.detail)).response()


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s", request.url.path)
    return ApiError(500, f"internal server error: {type(exc).__name__}: {exc}").response()


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    InvalidRequestError: handle_invalid_request,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
