"""An idle scheduler gathers requests sent together before its first step (--idle-gather-ms),
over real ZeroMQ sockets and a stand-in runner; a scheduler with running requests never waits."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import zmq

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.entrypoints.components import idle_gather_ms
from radixserve.runtime.entrypoints.launch_server import parse_args
from radixserve.runtime.scheduler.process import GATHER_CAP_GAPS, SchedulerLoop
from radixserve.runtime.scheduler.scheduler import Scheduler
from radixserve.runtime.wire.ipc import Receiver, Sender
from radixserve.runtime.wire.messages import GenerateReq, GetStatsReq, SchedulerInput
from tests.runtime.scheduler.test_scheduler import make_scheduler, request


class Wire:
    """The scheduler's inbound socket and a client's end of it, in one ZeroMQ context."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        address = f"inproc://gather-{uuid.uuid4().hex}"
        self.recv: Receiver[SchedulerInput] = Receiver(
            self.ctx, address, bind=True, message_type=SchedulerInput
        )
        self.send = Sender(self.ctx, address, bind=False)

    def send_later(self, messages: list[object], every_s: float) -> threading.Thread:
        """Sends `messages` from another thread, one every `every_s` seconds (the first at once)."""

        def run() -> None:
            for i, message in enumerate(messages):
                if i:
                    time.sleep(every_s)
                self.send.send(message)

        thread = threading.Thread(target=run)
        thread.start()
        return thread


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire()
    yield w
    w.ctx.destroy(linger=0)


def make_loop(wire: Wire, scheduler: Scheduler, gather_ms: float) -> SchedulerLoop:
    return SchedulerLoop(scheduler, wire.recv, None, os.getpid(), gather_ms=gather_ms)  # type: ignore[arg-type]


def rids(messages: list[SchedulerInput]) -> list[str]:
    return [m.rid for m in messages if isinstance(m, GenerateReq)]


def test_idle_scheduler_takes_requests_sent_together(wire: Wire) -> None:
    # Gaps of 30 ms under a 500 ms window: the three arrive as one batch even on a busy machine.
    loop = make_loop(wire, make_scheduler(), gather_ms=500)
    sender = wire.send_later([request(f"r{i}", [1, 2, 3], 2) for i in range(3)], every_s=0.03)
    received = loop.receive()
    sender.join()
    assert rids(received) == ["r0", "r1", "r2"]
    for message in received:
        loop.handle(message)
    plan = loop.scheduler.builder.build(loop.scheduler.waiting, loop.scheduler.running)
    assert sorted(s.req.rid for s in plan.slices) == ["r0", "r1", "r2"]  # one prefill step


def test_without_gathering_the_first_starts_alone(wire: Wire) -> None:
    loop = make_loop(wire, make_scheduler(), gather_ms=0)
    sender = wire.send_later([request("a", [1, 2, 3], 2), request("b", [4, 5], 2)], every_s=0.5)
    assert rids(loop.receive()) == ["a"]
    sender.join()
    assert rids(loop.receive()) == ["b"]


def test_running_requests_are_not_held_back(wire: Wire) -> None:
    """With requests running, the loop takes what has arrived and steps at once."""
    scheduler = make_scheduler()
    scheduler.add_request(request("running", [1, 2, 3], 50))
    scheduler.step()
    loop = make_loop(wire, scheduler, gather_ms=2_000)
    sender = wire.send_later([request("a", [1], 2), request("b", [2], 2)], every_s=0.3)
    time.sleep(0.05)  # "a" is queued
    started = time.monotonic()
    assert rids(loop.receive()) == ["a"]
    assert time.monotonic() - started < 0.3  # it did not wait for "b" (2 s of gathering)
    sender.join()


def test_a_trickle_cannot_hold_the_first_back(wire: Wire) -> None:
    """Arrivals closer than the gap, without end: gathering stops after GATHER_CAP_GAPS gaps."""
    gap_ms, every_ms = 50, 10
    sent = 2 * GATHER_CAP_GAPS * gap_ms // every_ms  # twice what the cap's time can bring
    loop = make_loop(wire, make_scheduler(), gather_ms=gap_ms)
    sender = wire.send_later(
        [request(f"r{i}", [i + 1], 1) for i in range(sent)], every_s=every_ms / 1e3
    )
    received = rids(loop.receive())
    sender.join()
    assert 1 < len(received) < sent
    assert received == [f"r{i}" for i in range(len(received))]  # in order, none lost
    rest = rids(loop.receive()) + rids(loop.recv.recv_all())
    assert received + rest == [f"r{i}" for i in range(sent)]


def test_other_messages_do_not_start_a_gather(wire: Wire) -> None:
    """A stats query on an idle scheduler is answered without waiting for requests."""
    loop = make_loop(wire, make_scheduler(), gather_ms=2_000)
    sender = wire.send_later([GetStatsReq(), request("late", [1], 1)], every_s=0.5)
    started = time.monotonic()
    received = loop.receive()
    assert isinstance(received[0], GetStatsReq) and rids(received) == []
    assert time.monotonic() - started < 0.5
    sender.join()


def test_flag_parses_and_defaults_by_device() -> None:
    assert parse_args(["--idle-gather-ms", "7.5"]) == ServerArgs(idle_gather_ms=7.5)
    assert idle_gather_ms(ServerArgs(device="cpu")) == 3.0
    assert idle_gather_ms(ServerArgs(device="cuda")) == 0.0
    assert idle_gather_ms(ServerArgs(device="cuda", idle_gather_ms=2)) == 2
    with pytest.raises(ValueError, match="--idle-gather-ms must be >= 0"):
        idle_gather_ms(ServerArgs(idle_gather_ms=-1))
