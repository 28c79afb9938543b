"""The tokenizer manager on real ZeroMQ sockets, with this test standing in for the scheduler
(it reads what the manager sends) and the detokenizer (it pushes what the manager receives).

Nobody may wait forever: a message that kills the receive loop fails every waiting caller at
once, a malformed output fails only the request it names, and closing fails whoever is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import msgspec
import pytest
import zmq
import zmq.asyncio

from radixserve.runtime.server.tokenizer_manager import (
    BadMessageError,
    RuntimeDiedError,
    TokenizerManager,
)
from radixserve.runtime.wire.messages import (
    AbortReq,
    FinishReason,
    FinishReq,
    GenerateReq,
    SchedulerInput,
    TextOut,
    TokenOut,
)
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.server.http.test_runtime_death import FakeChildren

FAIL_WITHIN_S = 5.0


@dataclass
class Wire:
    """The far ends of the manager's sockets."""

    scheduler: zmq.asyncio.Socket  # PULL: what the manager sends to the scheduler
    detokenizer: zmq.asyncio.Socket  # PUSH: what the manager receives
    decoder: msgspec.msgpack.Decoder = msgspec.msgpack.Decoder(SchedulerInput)

    async def sent(self, count: int) -> list[SchedulerInput]:
        """The next `count` messages the manager sent to the scheduler."""
        return [
            self.decoder.decode(await asyncio.wait_for(self.scheduler.recv(), FAIL_WITHIN_S))
            for _ in range(count)
        ]

    async def push(self, message: object) -> None:
        await self.detokenizer.send(msgspec.msgpack.encode(message))


@pytest.fixture
def children() -> Iterator[FakeChildren]:
    fake = FakeChildren()
    yield fake
    fake.paths.remove()


def generate_req(rid: str) -> GenerateReq:
    return GenerateReq(rid=rid, input_ids=[1, 2, 3], sampling=SamplingParams(max_new_tokens=4))


def text_out(rid: str, finish: FinishReason | None = None) -> TextOut:
    out = TokenOut(
        rid=rid,
        new_token_ids=[7],
        prompt_tokens=3,
        cached_tokens=0,
        completion_tokens=1,
        finish=finish,
    )
    return TextOut(rid=rid, text_delta="x", token_out=out)


async def collect(tm: TokenizerManager, rid: str) -> list[TextOut]:
    return [out async for out in tm.generate(generate_req(rid))]


def run(children: FakeChildren, scenario) -> None:
    """Runs `scenario(tm, wire, deaths)` against a started manager, closing everything after."""

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        scheduler = ctx.socket(zmq.PULL)
        scheduler.bind(children.paths.to_scheduler)
        tm = TokenizerManager(children)
        detokenizer = ctx.socket(zmq.PUSH)
        detokenizer.connect(children.paths.to_tokenizer)
        deaths: list[str] = []
        tm.on_death.append(deaths.append)
        tm.start()
        try:
            await scenario(tm, Wire(scheduler, detokenizer), deaths)
        finally:
            await tm.close()
            scheduler.close(0)
            detokenizer.close(0)
            ctx.term()

    asyncio.run(main())


async def wait_all_failed(waiters: list[asyncio.Task]) -> list[BaseException]:
    """Every waiter's error; fails the test if any is still waiting after FAIL_WITHIN_S."""
    started = time.monotonic()
    done, pending = await asyncio.wait(waiters, timeout=FAIL_WITHIN_S)
    assert not pending, f"{len(pending)} callers still waiting after {FAIL_WITHIN_S} s"
    assert time.monotonic() - started < FAIL_WITHIN_S
    return [task.exception() for task in waiters]


async def start_waiters(tm: TokenizerManager, wire: Wire) -> list[asyncio.Task]:
    """Three generate callers and a stats caller, each waiting on the scheduler for real."""
    waiters = [asyncio.create_task(collect(tm, rid)) for rid in ("a", "b", "c")]
    waiters.append(asyncio.create_task(tm.stats()))
    sent = await wire.sent(4)  # all four requests are out: their callers now wait for answers
    assert sorted(type(m).__name__ for m in sent) == ["GenerateReq"] * 3 + ["GetStatsReq"]
    await asyncio.sleep(0.1)
    assert not any(w.done() for w in waiters)
    return waiters


def test_undecodable_message_fails_every_waiter_within_5_s(children: FakeChildren) -> None:
    async def scenario(tm: TokenizerManager, wire: Wire, deaths: list[str]) -> None:
        waiters = await start_waiters(tm, wire)
        await wire.detokenizer.send(b"\xc1 is never valid msgpack")
        errors = await wait_all_failed(waiters)
        assert all(isinstance(e, RuntimeDiedError) for e in errors), errors
        assert all("receive loop failed" in str(e) for e in errors), errors
        assert not tm.healthy and deaths == [tm.error]
        # Later callers are told at once instead of waiting on a dead loop.
        with pytest.raises(RuntimeDiedError):
            await collect(tm, "late")
        with pytest.raises(RuntimeDiedError):
            await tm.stats()

    run(children, scenario)


def test_a_raising_decoder_kills_the_loop_and_fails_every_waiter(
    children: FakeChildren,
) -> None:
    class BrokenDecoder:
        def decode(self, raw: bytes) -> object:
            raise RuntimeError("injected decoder failure")

    async def scenario(tm: TokenizerManager, wire: Wire, deaths: list[str]) -> None:
        waiters = await start_waiters(tm, wire)
        tm.decoder = BrokenDecoder()  # type: ignore[assignment]
        await wire.push(text_out("a"))  # a perfectly good message
        errors = await wait_all_failed(waiters)
        assert all(isinstance(e, RuntimeDiedError) for e in errors), errors
        assert all("injected decoder failure" in str(e) for e in errors), errors
        assert not tm.healthy and len(deaths) == 1

    run(children, scenario)


def test_a_malformed_output_fails_only_its_request(children: FakeChildren) -> None:
    async def scenario(tm: TokenizerManager, wire: Wire, deaths: list[str]) -> None:
        waiters = await start_waiters(tm, wire)
        await wire.push({"type": "TextOut", "rid": "a", "text_delta": 5, "token_out": {}})
        await wire.push({"type": "TextOut", "rid": "gone", "text_delta": 5})  # nobody waits
        with pytest.raises(BadMessageError, match="undecodable"):
            await asyncio.wait_for(waiters[0], FAIL_WITHIN_S)
        assert [m.rid for m in await wire.sent(1) if isinstance(m, AbortReq)] == ["a"]
        # The loop lives on: other requests still get their outputs.
        await wire.push(text_out("b", FinishReason("length")))
        outs = await asyncio.wait_for(waiters[1], FAIL_WITHIN_S)
        assert outs[-1].token_out.finish == FinishReason("length")
        assert tm.healthy and not deaths
        assert not waiters[2].done() and not waiters[3].done()
        await tm.close()  # whoever is left is told, not left waiting
        errors = await wait_all_failed(waiters[2:])
        assert all(isinstance(e, RuntimeDiedError) for e in errors), errors

    run(children, scenario)


def test_stop_string_finish_is_sent_to_the_scheduler_as_finish_req(
    children: FakeChildren,
) -> None:
    async def scenario(tm: TokenizerManager, wire: Wire, deaths: list[str]) -> None:
        stopped = asyncio.create_task(collect(tm, "s"))
        await wire.sent(1)
        finish = FinishReason("stop", matched="END", external=True)
        await wire.push(text_out("s", finish))
        outs = await asyncio.wait_for(stopped, FAIL_WITHIN_S)
        assert outs[-1].token_out.finish == finish
        assert await wire.sent(1) == [FinishReq("s", finish)]
        # A stop token is the scheduler's own finish: nothing is sent back.
        plain = asyncio.create_task(collect(tm, "t"))
        await wire.sent(1)
        await wire.push(text_out("t", FinishReason("stop", matched=2)))
        await asyncio.wait_for(plain, FAIL_WITHIN_S)
        # A caller that leaves early aborts its request.
        early: AsyncIterator[TextOut] = tm.generate(generate_req("u"))
        first = asyncio.create_task(anext(early))
        await wire.sent(1)
        await wire.push(text_out("u"))
        await asyncio.wait_for(first, FAIL_WITHIN_S)
        await early.aclose()
        assert await wire.sent(1) == [AbortReq("u")]
        assert tm.healthy

    run(children, scenario)


def test_close_logs_a_failed_task(children: FakeChildren, caplog) -> None:
    async def scenario(tm: TokenizerManager, wire: Wire, deaths: list[str]) -> None:
        async def broken() -> None:
            raise ValueError("a task bug")

        tm.tasks.append(asyncio.create_task(broken(), name="broken-task"))
        await asyncio.sleep(0.01)  # it has failed before close() cancels the tasks

    with caplog.at_level(logging.ERROR):
        run(children, scenario)  # closes the manager
    assert "broken-task failed" in caplog.text and "a task bug" in caplog.text


def test_control_requests_go_to_every_replica_and_merge_their_replies() -> None:
    """Two replicas: flush succeeds only if both did; stats are merged in dp-rank order."""
    from radixserve.runtime.config.server_args import ServerArgs
    from radixserve.runtime.wire.messages import FlushCacheOut, StatsOut
    from tests.runtime.server.test_dp_router import scheduler_stats

    children = FakeChildren(args=ServerArgs(dp_size=2))

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        replicas = []
        for rank in range(2):
            socket = ctx.socket(zmq.PULL)
            socket.bind(children.paths.scheduler_address(rank))
            replicas.append(socket)
        detokenizer = ctx.socket(zmq.PUSH)
        detokenizer.connect(children.paths.to_tokenizer)
        tm = TokenizerManager(children)
        tm.start()
        decoder = msgspec.msgpack.Decoder(SchedulerInput)

        async def answer(replies: list[object]) -> None:
            for socket in replicas:  # each replica got the request
                decoder.decode(await asyncio.wait_for(socket.recv(), FAIL_WITHIN_S))
            for reply in replies:
                await detokenizer.send(msgspec.msgpack.encode(reply))

        try:
            flush = asyncio.create_task(tm.flush_cache())
            await answer([FlushCacheOut(ok=True, dp_rank=0), FlushCacheOut(ok=False, dp_rank=1)])
            assert await asyncio.wait_for(flush, FAIL_WITHIN_S) is False
            stats = asyncio.create_task(tm.stats())
            second, first = scheduler_stats(3, 90, 100, "ok"), scheduler_stats(0, 0, 300, "ok")
            await answer([StatsOut(stats=second, dp_rank=1), StatsOut(stats=first, dp_rank=0)])
            merged = await asyncio.wait_for(stats, FAIL_WITHIN_S)
            assert merged.requests_finished == 3 and merged.replicas == [first, second]
        finally:
            await tm.close()
            for socket in [*replicas, detokenizer]:
                socket.close(0)
            ctx.term()
            children.paths.remove()

    asyncio.run(main())
