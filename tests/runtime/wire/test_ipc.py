"""The ZeroMQ transport: typed messages over ipc:// sockets; bad bytes do not end a loop."""

from __future__ import annotations

import zmq

from radixserve.runtime.wire.ipc import IpcPaths, Receiver, Sender
from radixserve.runtime.wire.messages import AbortReq, FlushCacheReq, SchedulerInput


def test_an_undecodable_message_is_dropped_and_the_next_one_arrives() -> None:
    paths = IpcPaths.create()
    ctx = zmq.Context()
    try:
        receiver: Receiver[SchedulerInput] = Receiver(
            ctx, paths.to_scheduler, bind=True, message_type=SchedulerInput
        )
        sender = Sender(ctx, paths.to_scheduler, bind=False)
        raw = ctx.socket(zmq.PUSH)
        raw.connect(paths.to_scheduler)
        # Two connections: ZeroMQ may deliver their messages in either order.
        raw.send(b"\xc1 is never msgpack")
        sender.send(AbortReq("r1"))
        got = [receiver.recv(timeout_ms=5000) for _ in range(2)]  # the bad one is None, no raise
        assert sorted(got, key=lambda m: m is None) == [AbortReq("r1"), None]
        raw.send(b"\x93\x01\x02")  # msgpack, but not a message of the union
        sender.send(FlushCacheReq())
        received: list[SchedulerInput] = []
        while not received:
            assert receiver.socket.poll(5000)
            received = receiver.recv_all()
        assert received == [FlushCacheReq()]
        raw.close(0)
        sender.close()
        receiver.close()
    finally:
        ctx.destroy(linger=0)
        paths.remove()
