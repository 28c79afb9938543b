"""The server side of the process boundary: sends requests, routes results back to callers.

With `--dp-size N` there are N scheduler replicas: a `DataParallelRouter` picks each request's
replica, aborts follow the request there, and control requests (flush, stats) go to every
replica and are answered once all have replied.

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

from ..wire.messages import (
    AbortReq,
    ControlOut,
    DetokenizerOutput,
    FlushCacheReq,
    GenerateReq,
    GetStatsReq,
    TextOut,
)
from .dp_router import DataParallelRouter
from .launcher import ChildProcesses

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
        self.pushes = []
        for dp_rank in range(children.args.dp_size):
            push = self.ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(children.paths.scheduler_address(dp_rank))
            self.pushes.append(push)
        self.router = self._make_router(children)
        self.replica_of: dict[str, int] = {}
        self.control_replies: dict[str, list[ControlOut]] = {}
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(children.paths.to_tokenizer)
        self.tasks: list[asyncio.Task[None]] = []
        self.on_death: list[Any] = []

    @staticmethod
    def _make_router(children: ChildProcesses) -> DataParallelRouter | None:
        args = children.args
        if args.dp_size == 1:
            return None
        pool_tokens = int(children.info.get("pool_tokens", 0))
        return DataParallelRouter(
            args.dp_size,
            args.load_balance_method,
            num_pages=max(pool_tokens // args.page_size, 1),
            page_size=args.page_size,
        )

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
        for push in self.pushes:
            push.close(0)
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
        replica = self.router.route(req.input_ids).replica if self.router is not None else 0
        self.replica_of[req.rid] = replica
        finished = False
        try:
            await self.pushes[replica].send(self.encoder.encode(req))
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
            self.replica_of.pop(req.rid, None)
            if self.router is not None:
                self.router.finished(replica)

    async def abort(self, rid: str) -> None:
        replica = self.replica_of.get(rid)
        targets = self.pushes if replica is None else [self.pushes[replica]]
        for push in targets:  # an unknown rid: every replica checks (a no-op where absent)
            await push.send(self.encoder.encode(AbortReq(rid)))

    async def control(self, kind: str) -> ControlOut:
        """Sends a control request to every replica; one merged reply once all have answered."""
        message = FlushCacheReq() if kind == "flush_cache" else GetStatsReq()
        async with self.control_lock:
            future: asyncio.Future[ControlOut] = asyncio.get_running_loop().create_future()
            self.control_waiters[kind] = future
            self.control_replies[kind] = []
            for push in self.pushes:
                await push.send(self.encoder.encode(message))
            try:
                return await asyncio.wait_for(future, timeout=30)
            finally:
                self.control_waiters.pop(kind, None)
                self.control_replies.pop(kind, None)

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
                replies = self.control_replies.get(message.kind)
                if waiter is None or waiter.done() or replies is None:
                    continue
                replies.append(message)
                if len(replies) == len(self.pushes):
                    waiter.set_result(merge_control_replies(replies))

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


def merge_control_replies(replies: list[ControlOut]) -> ControlOut:
    """One reply for all replicas: flush succeeded only if it did everywhere; stats are summed
    (counts) or averaged (fractions), with each replica's own stats under "replicas"."""
    if len(replies) == 1:
        return replies[0]
    replies = sorted(replies, key=lambda r: r.dp_rank)
    payload = merge_stats([r.payload for r in replies])
    cache = payload.get("cache")
    if isinstance(cache, dict) and cache.get("total_match_tokens"):
        # A rate of the sums, not the mean of the replicas' rates.
        cache["hit_rate"] = cache["hit_tokens"] / cache["total_match_tokens"]
    payload["replicas"] = [r.payload for r in replies]
    return ControlOut(kind=replies[0].kind, ok=all(r.ok for r in replies), payload=payload)


def merge_stats(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, first in payloads[0].items():
        values = [p.get(key) for p in payloads]
        if isinstance(first, bool) or first is None:
            merged[key] = first
        elif isinstance(first, int) and all(isinstance(v, int) for v in values):
            merged[key] = sum(values)
        elif isinstance(first, (int, float)) and all(isinstance(v, (int, float)) for v in values):
            merged[key] = sum(values) / len(values)
        elif isinstance(first, dict) and all(isinstance(v, dict) for v in values):
            merged[key] = merge_stats(values)
        elif isinstance(first, str) and any(v is None for v in values):
            merged[key] = "not reported by every replica"
        elif isinstance(first, str):
            distinct = list(dict.fromkeys(str(v) for v in values))
            merged[key] = distinct[0] if len(distinct) == 1 else "; ".join(distinct)
        else:
            merged[key] = first
    return merged
