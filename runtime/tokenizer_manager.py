"""The server side of the process boundary: sends requests, routes results back to callers.

Every in-flight request has an asyncio queue. A receive task moves each `TextOut` from the
detokenizer to its request's queue; a watchdog polls the child processes and, if one dies, puts the
error into every queue at once and marks the runtime unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from radixserve.runtime.io_struct import (
    AbortReq,
    ControlOut,
    DetokenizerOutput,
    FlushCacheReq,
    GenerateReq,
    GetStatsReq,
    TextOut,
)
from radixserve.runtime.launcher import ChildProcesses

logger = logging.getLogger(__name__)
WATCHDOG_INTERVAL_S = 0.2


class RuntimeDiedError(RuntimeError):
    pass


class TokenizerManager:
    def __init__(self, children: ChildProcesses) -> None:
        self.children = children
        self.queues: dict[str, asyncio.Queue[TextOut | Exception]] = {}
        self.control_waiters: dict[str, asyncio.Future[ControlOut]] = {}
        self.control_lock = asyncio.Lock()
        self.error: str | None = None
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(DetokenizerOutput)
        self.ctx = zmq.asyncio.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(children.paths.to_scheduler)
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(children.paths.to_tokenizer)
        self.tasks: list[asyncio.Task[None]] = []
        self.on_death: list[Any] = []

    @property
    def healthy(self) -> bool:
        return self.error is None

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self._watchdog()),
        ]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.push.close(0)
        self.pull.close(0)
        self.ctx.term()

    # --- requests ------------------------------------------------------------------------------

    async def generate(self, req: GenerateReq) -> AsyncIterator[TextOut]:
        """Yields the request's outputs until its final one; aborts it if the caller stops early."""
        if self.error is not None:
            raise RuntimeDiedError(self.error)
        if req.rid in self.queues:
            raise ValueError(f"request id {req.rid!r} is already in use")
        queue: asyncio.Queue[TextOut | Exception] = asyncio.Queue()
        self.queues[req.rid] = queue
        finished = False
        try:
            await self.push.send(self.encoder.encode(req))
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                finish = item.token_out.finish
                if finish is not None:
                    finished = True
                    if finish.type == "stop" and isinstance(finish.matched, str):
                        await self.abort(req.rid)  # a stop string: the scheduler stops too
                yield item
                if finished:
                    return
        finally:
            self.queues.pop(req.rid, None)
            if not finished and self.error is None:
                await self.abort(req.rid)

    async def abort(self, rid: str) -> None:
        await self.push.send(self.encoder.encode(AbortReq(rid)))

    async def control(self, kind: str) -> ControlOut:
        message = FlushCacheReq() if kind == "flush_cache" else GetStatsReq()
        async with self.control_lock:
            future: asyncio.Future[ControlOut] = asyncio.get_running_loop().create_future()
            self.control_waiters[kind] = future
            await self.push.send(self.encoder.encode(message))
            try:
                return await asyncio.wait_for(future, timeout=30)
            finally:
                self.control_waiters.pop(kind, None)

    # --- background tasks ----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            message = self.decoder.decode(await self.pull.recv())
            if isinstance(message, TextOut):
                queue = self.queues.get(message.rid)
                if queue is not None:
                    queue.put_nowait(message)
            elif isinstance(message, ControlOut):
                waiter = self.control_waiters.get(message.kind)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)

    async def _watchdog(self) -> None:
        while self.error is None:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            dead = self.children.dead_child()
            if dead is not None:
                self.fail_all(dead)

    def fail_all(self, reason: str) -> None:
        logger.error("runtime failed: %s", reason)
        self.error = reason
        for queue in self.queues.values():
            queue.put_nowait(RuntimeDiedError(reason))
        for waiter in self.control_waiters.values():
            if not waiter.done():
                waiter.set_exception(RuntimeDiedError(reason))
        for callback in self.on_death:
            callback(reason)
