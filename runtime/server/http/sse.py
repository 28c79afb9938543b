"""Server-sent events: `data: {json}\\n\\n` per chunk, `data: [DONE]\\n\\n` at the end.

`stream_sse` is the one streaming shell of every endpoint; each API only says which chunks an
output becomes. Starlette cancels a streaming response's iterator when the client disconnects;
the cancellation reaches `TokenizerManager.generate`, whose clean-up aborts the request in the
scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import StreamingResponse

from .body import until_disconnect
from .errors import ApiError

T = TypeVar("T")
DONE = b"data: [DONE]\n\n"
_END = object()  # a stream's end marker inside `merge`
_encoder = msgspec.json.Encoder()


def sse_event(content: Any) -> bytes:
    return b"data: " + _encoder.encode(content) + b"\n\n"


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    # X-Accel-Buffering: a buffering reverse proxy would hold tokens back until the end.
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def no_trailer() -> Iterable[object]:
    return ()


async def stream_sse(
    request: Request,
    streams: Sequence[AsyncIterator[T]],
    render: Callable[[int, T], Iterable[object]],
    trailer: Callable[[], Iterable[object]] = no_trailer,
) -> StreamingResponse:
    """Streams the requests' outputs as SSE, in the order they arrive.

    Each item of stream i becomes the chunks `render(i, item)`; after the last one come the
    chunks of `trailer()` (a usage chunk), then [DONE]. The first item is awaited before the
    response starts, so a refused request still gets its 4xx status; an `ApiError` after the 200
    (a later refusal, the runtime dying) becomes an error event before [DONE].
    """
    merged = merge(list(streams))
    first = await until_disconnect(request, merged.__anext__())

    async def events() -> AsyncIterator[bytes]:
        try:
            async for index, item in prepend(first, merged):
                for chunk in render(index, item):
                    yield sse_event(chunk)
            for chunk in trailer():
                yield sse_event(chunk)
        except ApiError as exc:
            yield sse_event(exc.payload())
        yield DONE

    return sse_response(events())


async def merge(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Interleaves several streams as their items arrive, tagged with the stream's index.

    The first error in any stream is raised here; leaving early cancels every stream (each one
    then aborts its request).
    """
    queue: asyncio.Queue[tuple[int, Any, BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                queue.put_nowait((index, item, None))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, never lost in a task
            queue.put_nowait((index, None, exc))
        finally:
            queue.put_nowait((index, _END, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                remaining -= 1
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()


async def prepend(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    yield first
    async for item in rest:
        yield item
