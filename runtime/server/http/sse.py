"""Server-sent events: `data: {json}\\n\\n` per chunk, `data: [DONE]\\n\\n` at the end.

Starlette cancels a streaming response's iterator when the client disconnects; the cancellation
reaches `TokenizerManager.generate`, whose clean-up aborts the request in the scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
from starlette.responses import StreamingResponse

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
