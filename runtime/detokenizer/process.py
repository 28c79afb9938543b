"""The detokenizer process: token ids in from the scheduler, text deltas out to the server.

It keeps one `IncrementalDetokenizer` per live request (`DetokenizerManager`), created from the
spec that arrives with the request's first output. When a stop string matches, the request's
final output carries `finish=stop(matched=string)`; the server then sends the scheduler a
`FinishReq`, and outputs that were already in flight for it are dropped here.
"""

from __future__ import annotations

import logging
import os
import signal
from multiprocessing.connection import Connection

import zmq

from ..config.server_args import ServerArgs
from ..wire.ipc import IpcPaths, Receiver, Sender
from ..wire.messages import ControlOut, ReadyOut, SchedulerOutput, TokenBatchOut
from .manager import DetokenizerManager

logger = logging.getLogger(__name__)
POLL_MS = 200


def run_detokenizer_process(args: ServerArgs, paths: IpcPaths, ready: Connection) -> None:
    logging.basicConfig(
        level=args.log_level.upper(), format="[detokenizer] %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    try:
        from ..config.model_source import resolve_model_source
        from ..config.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(resolve_model_source(args.model_path), args.tokenizer_path)
    except Exception as exc:
        ready.send(ReadyOut(process="detokenizer", ok=False, error=f"{type(exc).__name__}: {exc}"))
        return
    ctx = zmq.Context()
    recv: Receiver = Receiver(ctx, paths.to_detokenizer, bind=True, message_type=SchedulerOutput)
    send = Sender(ctx, paths.to_tokenizer, bind=False)
    ready.send(ReadyOut(process="detokenizer", ok=True))
    manager = DetokenizerManager(tokenizer)
    while os.getppid() == parent:
        message = recv.recv(POLL_MS)
        if isinstance(message, TokenBatchOut):
            for text_out in manager.handle(message):
                send.send(text_out)
        elif isinstance(message, ControlOut):
            send.send(message)
    ctx.destroy(linger=0)
