"""Reading request bodies under a size limit, JSON responses, and client-disconnect watching."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError, decode_error

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before its (non-streaming) answer was ready."""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or 413. An oversized body is still drained so the client reads the 413
    instead of failing on a reset connection mid-upload."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > max_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        too_large = too_large or size > max_bytes
        if not too_large:
            chunks.append(chunk)
    if too_large:
        raise ApiError(
            413, f"the request body exceeds the limit of {max_bytes} bytes", code="body_too_large"
        )
    return b"".join(chunks)


async def read_json(request: Request, kind: type[T], max_bytes: int) -> T:
    body = await read_body(request, max_bytes)
    if not body.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="bad_json")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise decode_error(exc) from exc


def json_response(content: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(content), status, media_type="application/json")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Runs `work`, cancelling it (which aborts its requests) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise ClientDisconnected


async def _wait_disconnect(request: Request) -> None:
    # The body was read already, so the next ASGI message can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
