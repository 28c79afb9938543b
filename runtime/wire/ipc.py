"""ZeroMQ plumbing: socket addresses in a private directory and typed send/receive.

Sockets are `ipc://` files inside a fresh 0700 temporary directory (only this user can connect),
removed at shutdown. Each direction is one PUSH/PULL pair; messages are msgpack-encoded msgspec
Structs decoded by the receiver's declared union type.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import zmq

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class IpcPaths:
    directory: str
    to_scheduler: str  # tokenizer side -> scheduler
    to_detokenizer: str  # scheduler -> detokenizer
    to_tokenizer: str  # detokenizer -> tokenizer side

    @classmethod
    def create(cls) -> IpcPaths:
        directory = tempfile.mkdtemp(prefix="radixserve-")  # mkdtemp makes it 0700
        os.chmod(directory, 0o700)

        def addr(name: str) -> str:
            return f"ipc://{os.path.join(directory, name)}"

        return cls(directory, addr("scheduler"), addr("detokenizer"), addr("tokenizer"))

    def scheduler_address(self, dp_rank: int) -> str:
        """Where data-parallel replica `dp_rank` listens (replica 0: `to_scheduler`)."""
        return self.to_scheduler if dp_rank == 0 else f"{self.to_scheduler}-{dp_rank}"

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Sender:
    def __init__(self, ctx: zmq.Context, address: str, bind: bool) -> None:
        self.socket = ctx.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 0)
        (self.socket.bind if bind else self.socket.connect)(address)
        self.encoder = msgspec.msgpack.Encoder()

    def send(self, message: Any) -> None:
        self.socket.send(self.encoder.encode(message), copy=False)

    def close(self) -> None:
        self.socket.close(linger=0)


class Receiver(Generic[T]):
    def __init__(self, ctx: zmq.Context, address: str, bind: bool, message_type: Any) -> None:
        self.socket = ctx.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        (self.socket.bind if bind else self.socket.connect)(address)
        self.decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(message_type)

    def recv(self, timeout_ms: int | None = None) -> T | None:
        """One message, or None when nothing (decodable) arrives within the timeout
        (None = block)."""
        if timeout_ms is not None and not self.socket.poll(timeout_ms):
            return None
        return self._decode(self.socket.recv(copy=False).buffer)

    def recv_all(self) -> list[T]:
        """Every message already queued, without blocking."""
        messages = []
        while True:
            try:
                raw = self.socket.recv(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return messages
            message = self._decode(raw.buffer)
            if message is not None:
                messages.append(message)

    def _decode(self, raw: memoryview) -> T | None:
        """The message, or None (logged) for bytes that are not one: a process's loop outlives
        a malformed message instead of dying on it."""
        try:
            return self.decoder.decode(raw)
        except msgspec.DecodeError as exc:
            logger.error("dropped an undecodable message (%d bytes): %s", len(raw), exc)
            return None

    def close(self) -> None:
        self.socket.close(linger=0)
