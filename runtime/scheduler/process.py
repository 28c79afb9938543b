"""The scheduler process: receives requests over ZeroMQ and runs the scheduling loop.

No single request may take the loop down: a request the scheduler refuses is answered with an
abort of code `rejected` carrying the reason, and an exception inside a step aborts the requests
of that step (code `internal`) and keeps serving. The process exits when told to, when its parent
dies, or on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from multiprocessing.connection import Connection

import zmq

from ...utils.gc_tuning import freeze_startup_objects
from ..config.server_args import ServerArgs
from ..wire.ipc import IpcPaths, Receiver, Sender
from ..wire.messages import (
    AbortCode,
    AbortReq,
    FinishReason,
    FinishReq,
    FlushCacheOut,
    FlushCacheReq,
    GenerateReq,
    GetStatsReq,
    GetTreeReq,
    ReadyOut,
    RuntimeInfo,
    SchedulerInput,
    ShutdownReq,
    StatsOut,
    TokenBatchOut,
    TokenOut,
)
from .scheduler import Scheduler
from .tree_view import tree_out

logger = logging.getLogger(__name__)
IDLE_POLL_MS = 50


def run_scheduler_process(
    args: ServerArgs, paths: IpcPaths, ready: Connection, dp_rank: int = 0
) -> None:
    logging.basicConfig(
        level=args.log_level.upper(), format="[scheduler] %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and shuts us down
    parent = os.getppid()
    try:
        from ..entrypoints.components import build_runtime, idle_gather_ms

        state = build_runtime(args)
    except Exception as exc:  # any start-up failure is reported, never a hang
        error = f"{type(exc).__name__}: {exc}"
        ready.send(ReadyOut(process=f"scheduler-{dp_rank}", ok=False, error=error))
        return
    freeze_startup_objects()
    ctx = zmq.Context()
    loop = SchedulerLoop(
        state.scheduler,
        Receiver(ctx, paths.scheduler_address(dp_rank), bind=True, message_type=SchedulerInput),
        Sender(ctx, paths.to_detokenizer, bind=False),
        parent,
        dp_rank,
        gather_ms=idle_gather_ms(args),
    )
    ready.send(
        ReadyOut(
            process=f"scheduler-{dp_rank}",
            ok=True,
            info=RuntimeInfo(
                context_len=state.runner.context_len,
                vocab_size=state.runner.vocab_size,
                pool_tokens=state.cache.num_pages * args.page_size,
                model_name=args.served_model_name or state.runner.model_name,
            ),
        )
    )
    try:
        loop.run()
    finally:
        state.runner.shutdown()  # stops tensor-parallel worker ranks, if any
        ctx.destroy(linger=0)


# An idle scheduler gathers arrivals for at most this many gaps in all, so that a steady trickle
# of requests cannot hold the first one back for long.
GATHER_CAP_GAPS = 10


class SchedulerLoop:
    def __init__(
        self,
        scheduler: Scheduler,
        recv: Receiver,
        send: Sender,
        parent_pid: int,
        dp_rank: int = 0,
        gather_ms: float = 0.0,
    ) -> None:
        self.scheduler = scheduler
        self.dp_rank = dp_rank
        self.recv = recv
        self.send = send
        self.parent_pid = parent_pid
        self.gather_ms = gather_ms
        self.running = True

    def run(self) -> None:
        while self.running and os.getppid() == self.parent_pid:
            for message in self.receive():
                self.handle(message)
            if self.scheduler.has_work:
                outputs = self.safe_step()
                if outputs:
                    self.send.send(TokenBatchOut(outputs))

    def receive(self) -> list[SchedulerInput]:
        """What has arrived: waits up to IDLE_POLL_MS for a first message when idle, none when
        requests run. An idle scheduler given a request also waits for those sent with it."""
        idle = not self.scheduler.has_work
        first = self.recv.recv(IDLE_POLL_MS if idle else 0)
        messages = ([first] if first is not None else []) + self.recv.recv_all()
        if idle and self.gather_ms > 0 and any(isinstance(m, GenerateReq) for m in messages):
            messages += self.gather()
        return messages

    def gather(self) -> list[SchedulerInput]:
        """Messages arriving less than `gather_ms` after the previous one, for up to
        GATHER_CAP_GAPS gaps in all. Only an idle scheduler waits, so no running request is
        held back; a lone request pays one gap."""
        gathered: list[SchedulerInput] = []
        deadline = time.monotonic() + GATHER_CAP_GAPS * self.gather_ms / 1e3
        while (left_ms := 1e3 * (deadline - time.monotonic())) > 0:
            # zmq's poll takes whole milliseconds (and truncates): at least 1.
            message = self.recv.recv(max(1, round(min(self.gather_ms, left_ms))))
            if message is None:
                break
            gathered += [message, *self.recv.recv_all()]
        return gathered

    def handle(self, message: object) -> None:
        if isinstance(message, GenerateReq):
            self.admit(message)
        elif isinstance(message, AbortReq):
            self.scheduler.abort(message.rid, code=AbortCode.CLIENT)
        elif isinstance(message, FinishReq):
            self.scheduler.finish_externally(message.rid, message.finish)
        elif isinstance(message, FlushCacheReq):
            ok = self.scheduler.flush_cache()
            self.send.send(FlushCacheOut(ok=ok, dp_rank=self.dp_rank))
        elif isinstance(message, GetStatsReq):
            stats = self.scheduler.stats()
            self.send.send(StatsOut(stats=stats, dp_rank=self.dp_rank))
        elif isinstance(message, GetTreeReq):
            s = self.scheduler
            reply = tree_out(s.cache, message, len(s.running), len(s.waiting), self.dp_rank)
            self.send.send(reply)
        elif isinstance(message, ShutdownReq):
            self.running = False

    def admit(self, message: GenerateReq) -> None:
        """Adds the request, or answers it at once with why not. `add_request` checks before it
        changes anything, so a refused request leaves nothing behind."""
        try:
            self.scheduler.add_request(message)
        except ValueError as exc:  # the request's own fault (GrammarError is a ValueError)
            self.send.send(TokenBatchOut([rejected(message, AbortCode.REJECTED, str(exc))]))
        except Exception as exc:  # our fault, but still only this request's
            logger.error("admitting %s failed:\n%s", message.rid, traceback.format_exc())
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.send.send(TokenBatchOut([rejected(message, AbortCode.INTERNAL, reason)]))

    def safe_step(self) -> list[TokenOut]:
        live = list(self.scheduler.requests.values())
        try:
            return self.scheduler.step()
        except Exception as exc:
            if getattr(exc, "fatal", False):  # e.g. a lost tensor-parallel worker: stop here
                raise
            logger.error("step failed; aborting its requests:\n%s", traceback.format_exc())
            reason = f"internal error: {type(exc).__name__}: {exc}"
            # A failure while releasing them (a broken cache) ends the process.
            return self.scheduler.abort_after_failure(live, reason)


def rejected(message: GenerateReq, code: AbortCode, reason: str) -> TokenOut:
    """The final (and only) output of a request the scheduler never took in."""
    return TokenOut(
        rid=message.rid,
        new_token_ids=[],
        prompt_tokens=len(message.input_ids),
        cached_tokens=0,
        completion_tokens=0,
        finish=FinishReason.abort(code, reason),
    )
