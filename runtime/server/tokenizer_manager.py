"""The server side of the process boundary: sends requests, routes results back to callers.

With `--dp-size N` there are N scheduler replicas: a `DataParallelRouter` picks each request's
replica, aborts follow the request there, and control requests (flush, stats, cache tree) go to every
replica and are answered once all have replied.

Every in-flight request has an asyncio queue. A receive task moves each `TextOut` from the
detokenizer to its request's queue; a watchdog polls the child processes. Nobody may wait forever:
if a child dies or either task fails, `fail_all` puts the error into every queue and control
waiter at once and marks the runtime unhealthy. A message that does not decode fails only the
request it names, or everything when it names none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import msgspec
import zmq
import zmq.asyncio

from ..wire.messages import (
    AbortReq,
    ControlOut,
    DetokenizerOutput,
    FinishReq,
    FlushCacheOut,
    FlushCacheReq,
    GenerateReq,
    GetStatsReq,
    GetTreeReq,
    SchedulerInput,
    StatsOut,
    TextOut,
    TreeOut,
)
from ..wire.stats import SchedulerStats, merge_replicas
from .dp_router import DataParallelRouter
from .processes import RuntimeProcesses

logger = logging.getLogger(__name__)
WATCHDOG_INTERVAL_S = 0.2
CONTROL_TIMEOUT_S = 30.0
R = TypeVar("R", FlushCacheOut, StatsOut, TreeOut)


class RuntimeDiedError(RuntimeError):
    pass


class BadMessageError(RuntimeError):
    """A message from the detokenizer for this request did not decode."""


class TokenizerManager:
    def __init__(self, children: RuntimeProcesses) -> None:
        self.children = children
        self.queues: dict[str, asyncio.Queue[TextOut | Exception]] = {}
        # One control request of each kind at a time; its replies gather until every replica
        # has answered.
        self.control_waiters: dict[type[ControlOut], asyncio.Future[list[ControlOut]]] = {}
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
        self.control_replies: dict[type[ControlOut], list[ControlOut]] = {}
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(children.paths.to_tokenizer)
        self.tasks: list[asyncio.Task[None]] = []
        self.on_death: list[Callable[[str], None]] = []

    @staticmethod
    def _make_router(children: RuntimeProcesses) -> DataParallelRouter | None:
        args = children.args
        if args.dp_size == 1:
            return None
        pool_tokens = children.info.pool_tokens
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
            asyncio.create_task(self._guard("receive loop", self._receive_loop())),
            asyncio.create_task(self._guard("watchdog", self._watchdog())),
        ]

    async def close(self) -> None:
        if self.ctx.closed:
            return
        for task in self.tasks:
            task.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for task, result in zip(self.tasks, results, strict=True):
            if isinstance(result, Exception):  # _guard handles its own: this is a bug there
                logger.error("task %s failed", task.get_name(), exc_info=result)
        if self.error is None:  # nobody may be left waiting on a closed manager
            self._fail_waiters("the tokenizer manager was closed")
        for push in self.pushes:
            push.close(0)
        self.pull.close(0)
        self.ctx.term()

    # --- requests ------------------------------------------------------------------------------

    async def generate(
        self, req: GenerateReq, replica: int | None = None
    ) -> AsyncIterator[TextOut]:
        """Yields the request's outputs until its final one; aborts it if the caller stops early.
        `replica` pins the request to one data-parallel replica (checked by the caller)."""
        if self.error is not None:
            raise RuntimeDiedError(self.error)
        if req.rid in self.queues:
            raise ValueError(f"request id {req.rid!r} is already in use")
        queue: asyncio.Queue[TextOut | Exception] = asyncio.Queue()
        self.queues[req.rid] = queue
        if self.router is not None:
            replica = self.router.route(req.input_ids, replica).replica
        replica = replica or 0
        self.replica_of[req.rid] = replica
        finished = False
        try:
            await self._send(replica, req)
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                finish = item.token_out.finish
                if finish is not None:
                    finished = True
                    if finish.external:  # the detokenizer ended it: the scheduler stops too
                        await self._send(replica, FinishReq(req.rid, finish))
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
        targets = range(len(self.pushes)) if replica is None else [replica]
        for target in targets:  # an unknown rid: every replica checks (a no-op where absent)
            await self._send(target, AbortReq(rid))

    async def _send(self, replica: int, message: SchedulerInput) -> None:
        await self.pushes[replica].send(self.encoder.encode(message))

    async def flush_cache(self) -> bool:
        """Empties every replica's cache; False if any refused (requests were running)."""
        replies = await self._control(FlushCacheReq(), FlushCacheOut)
        return all(r.ok for r in replies)

    async def stats(self) -> SchedulerStats:
        """Every replica's statistics, merged (each replica's own under `replicas`)."""
        replies = await self._control(GetStatsReq(), StatsOut)
        return merge_replicas([r.stats for r in sorted(replies, key=lambda r: r.dp_rank)])

    async def cache_tree(self, request: GetTreeReq) -> list[TreeOut]:
        """One page of every replica's prefix-cache nodes, by dp rank."""
        replies = await self._control(request, TreeOut)
        return sorted(replies, key=lambda r: r.dp_rank)

    async def _control(
        self, message: FlushCacheReq | GetStatsReq | GetTreeReq, reply_type: type[R]
    ) -> list[R]:
        """Sends a control request to every replica; their replies once all have answered."""
        if self.error is not None:
            raise RuntimeDiedError(self.error)
        async with self.control_lock:
            future: asyncio.Future[list[ControlOut]] = asyncio.get_running_loop().create_future()
            self.control_waiters[reply_type] = future
            self.control_replies[reply_type] = []
            for push in self.pushes:
                await push.send(self.encoder.encode(message))
            try:
                replies = await asyncio.wait_for(future, timeout=CONTROL_TIMEOUT_S)
            finally:
                self.control_waiters.pop(reply_type, None)
                self.control_replies.pop(reply_type, None)
        return [r for r in replies if isinstance(r, reply_type)]

    # --- background tasks ----------------------------------------------------------------------

    async def _guard(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Runs a background task; if it fails, every waiter hears of it at once."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("the tokenizer manager's %s failed", name)
            self.fail_all(f"the tokenizer manager's {name} failed: {type(exc).__name__}: {exc}")

    async def _receive_loop(self) -> None:
        while True:
            raw = await self.pull.recv()
            try:
                message = self.decoder.decode(raw)
            except msgspec.DecodeError as exc:
                self._undecodable(raw, exc)
                continue
            if isinstance(message, TextOut):
                queue = self.queues.get(message.rid)
                if queue is not None:
                    queue.put_nowait(message)
            elif isinstance(message, ControlOut):
                waiter = self.control_waiters.get(type(message))
                replies = self.control_replies.get(type(message))
                if waiter is None or waiter.done() or replies is None:
                    continue
                replies.append(message)
                if len(replies) == len(self.pushes):
                    waiter.set_result(replies)

    def _undecodable(self, raw: bytes, exc: msgspec.DecodeError) -> None:
        """Fails the one request a bad message names. A message that names none could have been
        anyone's final output or control reply: raising ends the loop, and `_guard` then fails
        every waiter (better than leaving one waiting forever)."""
        try:
            fields = msgspec.msgpack.decode(raw)
        except msgspec.DecodeError:
            fields = None
        rid = fields.get("rid") if isinstance(fields, dict) else None
        if not isinstance(rid, str):
            raise RuntimeError(f"an undecodable message from the detokenizer: {exc}") from exc
        logger.error("an undecodable message for request %s: %s", rid, exc)
        queue = self.queues.get(rid)
        if queue is not None:  # else the request has ended: nobody waits for it
            queue.put_nowait(BadMessageError(f"an undecodable output from the detokenizer: {exc}"))

    async def _watchdog(self) -> None:
        while self.error is None:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            dead = self.children.dead_child()
            if dead is not None:
                self.fail_all(dead)

    def fail_all(self, reason: str) -> None:
        """Every waiting caller gets `RuntimeDiedError(reason)` now, and so will later ones;
        the runtime reports unhealthy and `on_death` callbacks run."""
        if self.error is not None:  # already failed: the first reason stands
            return
        logger.error("runtime failed: %s", reason)
        self._fail_waiters(reason)
        for callback in self.on_death:
            callback(reason)

    def _fail_waiters(self, reason: str) -> None:
        self.error = reason
        for queue in self.queues.values():
            queue.put_nowait(RuntimeDiedError(reason))
        for waiter in self.control_waiters.values():
            if not waiter.done():
                waiter.set_exception(RuntimeDiedError(reason))
