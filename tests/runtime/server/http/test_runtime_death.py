"""The app in-process with no model behind it: when a child process dies or the receive loop
fails, in-flight requests get 503 at once, /health answers 503 with the reason, and the server is
asked to shut down."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import zmq
from starlette.testclient import TestClient

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.server.http.app import create_app
from radixserve.runtime.server.http.config import HttpConfig
from radixserve.runtime.server.http.state import ServerState
from radixserve.runtime.wire.ipc import IpcPaths
from radixserve.runtime.wire.messages import RuntimeInfo

INFO = RuntimeInfo(context_len=64, vocab_size=100, pool_tokens=1024, model_name="fake")


@dataclass
class FakeChildren:
    """No processes: the scheduler socket has no reader, so requests wait forever."""

    paths: IpcPaths = field(default_factory=IpcPaths.create)
    args: ServerArgs = field(default_factory=ServerArgs)
    info: RuntimeInfo = INFO
    dead: str | None = None

    def dead_child(self) -> str | None:
        return self.dead


def test_child_death_gives_503_and_requests_shutdown() -> None:
    children = FakeChildren()
    shutdown = threading.Event()
    state = ServerState(
        ServerArgs(), children, INFO, tokenizer=None, config=HttpConfig(death_grace_s=0.05)
    )
    state.request_shutdown = shutdown.set
    try:
        with TestClient(create_app(state)) as client:
            assert client.get("/health").json() == {"status": "ok"}
            results: list[int] = []
            body = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 4}}
            worker = threading.Thread(
                target=lambda: results.append(client.post("/generate", json=body).status_code)
            )
            worker.start()
            time.sleep(0.3)  # the request is now waiting on the scheduler that never answers
            children.dead = "scheduler process died (exit code -9)"
            worker.join(10)
            assert results == [503]
            health = client.get("/health")
            assert health.status_code == 503 and "scheduler process died" in health.text
            later = client.post("/generate", json=body)
            assert later.status_code == 503 and later.json()["error"]["code"] == "unavailable"
            assert shutdown.wait(5)
    finally:
        children.paths.remove()


def test_api_key_guards_everything_but_health() -> None:
    children = FakeChildren()
    state = ServerState(ServerArgs(api_key="s3cret"), children, INFO, tokenizer=None)
    try:
        with TestClient(create_app(state)) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/v1/models").status_code == 401
            assert (
                client.get("/v1/models", headers={"Authorization": "Basic s3cret"}).status_code
                == 401
            )
            ok = client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "fake"
    finally:
        children.paths.remove()


def test_dead_receive_loop_gives_503_and_unhealthy() -> None:
    """One undecodable message from the detokenizer kills the receive loop: the waiting request
    gets 503 at once (not a hang), /health reports why, and the server is asked to stop."""
    children = FakeChildren()
    shutdown = threading.Event()
    state = ServerState(
        ServerArgs(), children, INFO, tokenizer=None, config=HttpConfig(death_grace_s=0.05)
    )
    state.request_shutdown = shutdown.set
    ctx = zmq.Context()
    detokenizer = ctx.socket(zmq.PUSH)
    try:
        with TestClient(create_app(state)) as client:
            detokenizer.connect(children.paths.to_tokenizer)
            results: list[int] = []
            body = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 4}}
            worker = threading.Thread(
                target=lambda: results.append(client.post("/generate", json=body).status_code)
            )
            worker.start()
            time.sleep(0.3)  # the request is now waiting for outputs
            detokenizer.send(b"\xc1 is never valid msgpack")
            worker.join(5)
            assert results == [503]
            health = client.get("/health")
            assert health.status_code == 503 and "receive loop failed" in health.text
            assert shutdown.wait(5)
    finally:
        detokenizer.close(0)
        ctx.term()
        children.paths.remove()


def test_flush_cache_also_empties_the_kept_prompt_logprobs() -> None:
    """The test plays the scheduler over the real sockets: it answers the flush, and the server
    then drops the prompt logprobs it kept (they would outlive the radix cache otherwise)."""
    import msgspec
    import zmq

    from radixserve.runtime.server.http.openai_logprobs import TokenLogprob
    from radixserve.runtime.wire.messages import FlushCacheOut, FlushCacheReq, SchedulerInput

    children = FakeChildren()
    state = ServerState(ServerArgs(), children, INFO, tokenizer=None)
    ctx = zmq.Context()
    scheduler = ctx.socket(zmq.PULL)
    scheduler.bind(children.paths.to_scheduler)
    detokenizer = ctx.socket(zmq.PUSH)
    detokenizer.connect(children.paths.to_tokenizer)
    ids = list(range(1, 2 + 2 * state.prompt_logprobs.block_tokens))
    entries = [TokenLogprob(ids[0], None, None)] + [TokenLogprob(i, -1.0, None) for i in ids[1:]]

    def answer_flush() -> None:
        assert scheduler.poll(10_000), "no flush request reached the scheduler"
        request = msgspec.msgpack.decode(scheduler.recv(), type=SchedulerInput)
        assert isinstance(request, FlushCacheReq)
        detokenizer.send(msgspec.msgpack.encode(FlushCacheOut(ok=True)))

    try:
        with TestClient(create_app(state)) as client:
            state.prompt_logprobs.store(ids, entries, top_k=0)
            assert len(state.prompt_logprobs.lookup(ids, 0)) == len(ids)
            scheduler_side = threading.Thread(target=answer_flush)
            scheduler_side.start()
            reply = client.post("/flush_cache")
            scheduler_side.join(15)
            assert reply.status_code == 200, reply.text
            assert state.prompt_logprobs.lookup(ids, 0) == entries[:1]  # only token 0 is known
            assert state.prompt_logprobs.size_values == 0
    finally:
        scheduler.close(0)
        detokenizer.close(0)
        ctx.term()
        children.paths.remove()
