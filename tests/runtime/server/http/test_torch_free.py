"""The HTTP process and the detokenizer process never import torch.

Each runs here with an import hook that refuses torch and reports the attempt: the server
answers a representative set of requests (native and OpenAI, streaming, grammars, tools,
logprobs, errors), the detokenizer process turns real token outputs into text over its real
sockets. The scheduler process (a fresh interpreter) loads torch and the model as usual.
"""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import textwrap

import httpx
import msgspec
import pytest
import zmq

from tests.runtime.server.http.conftest import start_server, stop_server
from tests.runtime.torch_blocker import BLOCK_TORCH, BLOCKED

pytestmark = pytest.mark.slow

SERVER_MAIN = BLOCK_TORCH + textwrap.dedent(
    """
    from radixserve.runtime.entrypoints.launch_server import main
    main(sys.argv[1:])
    """
)


def test_the_http_process_serves_everything_without_torch() -> None:
    server = start_server(main_code=SERVER_MAIN)
    try:
        with server.client() as client:
            exercise(client)
    finally:
        code = stop_server(server)
    log = server.log_tail(20000)
    assert BLOCKED not in log, log
    assert code == 0, log


def exercise(client: httpx.Client) -> None:
    greedy = {"temperature": 0, "max_new_tokens": 8}
    out = client.post(
        "/generate",
        json={
            "text": "The capital of France is",
            "sampling_params": {**greedy, "stop": ["."]},
            "return_logprob": True,
            "top_logprobs_num": 2,
        },
    )
    assert out.status_code == 200, out.text
    assert out.json()["meta_info"]["completion_tokens"] > 0
    regex = {**greedy, "regex": "(yes|no)"}
    out = client.post("/generate", json={"text": "Is water wet? ", "sampling_params": regex})
    assert out.json()["text"] in ("yes", "no"), out.text
    with client.stream(
        "POST", "/generate", json={"text": "Hi", "stream": True, "sampling_params": greedy}
    ) as stream:
        assert stream.status_code == 200
        assert any(line == "data: [DONE]" for line in stream.iter_lines())
    model = client.get("/v1/models").json()["data"][0]["id"]
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "max_tokens": 8,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 2,
            "messages": [{"role": "user", "content": "What is 2+2?"}],
        },
    )
    assert chat.status_code == 200, chat.text
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}},
                    "required": ["a"],
                },
            },
        }
    ]
    call = client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "max_tokens": 80,
            "temperature": 0,
            "tools": tools,
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "messages": [{"role": "user", "content": "Add 1"}],
        },
    )
    assert call.status_code == 200 and call.json()["choices"][0]["message"].get("tool_calls"), (
        call.text
    )
    completion = client.post(
        "/v1/completions",
        json={"model": model, "prompt": "Hello", "max_tokens": 4, "logprobs": 2, "echo": True},
    )
    assert completion.status_code == 200, completion.text
    assert client.post("/generate", json={"text": ""}).status_code == 400
    bad_grammar = {"text": "x", "sampling_params": {"regex": "(unclosed"}}
    assert client.post("/generate", json=bad_grammar).status_code == 400
    assert client.get("/get_server_info").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.post("/flush_cache").status_code == 200


DETOKENIZER_MAIN = BLOCK_TORCH + textwrap.dedent(
    """
    import multiprocessing.connection, pickle
    from radixserve.runtime.config.server_args import ServerArgs
    from radixserve.runtime.detokenizer.process import run_detokenizer_process
    paths, handle = pickle.loads(bytes.fromhex(sys.argv[1]))
    ready = multiprocessing.connection.Connection(handle)
    run_detokenizer_process(ServerArgs(log_level="warning"), paths, ready)
    """
)


def test_the_detokenizer_process_runs_without_torch() -> None:
    import pickle

    from radixserve.runtime.wire.ipc import IpcPaths
    from radixserve.runtime.wire.messages import (
        DetokenizerOutput,
        DetokenizeSpec,
        TextOut,
        TokenBatchOut,
        TokenOut,
    )
    from tests.runtime.smollm2 import smollm2_tokenizer

    paths = IpcPaths.create()
    reader, writer = mp.Pipe(duplex=False)
    argument = pickle.dumps((paths, writer.fileno())).hex()
    process = subprocess.Popen(
        [sys.executable, "-c", DETOKENIZER_MAIN, argument],
        pass_fds=[writer.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    writer.close()
    ctx = zmq.Context()
    try:
        assert reader.poll(300), "the detokenizer did not report readiness"
        report = reader.recv()
        assert report.ok, f"{report.error}\n{child_output(process)}"
        pull = ctx.socket(zmq.PULL)
        pull.bind(paths.to_tokenizer)
        push = ctx.socket(zmq.PUSH)
        push.connect(paths.to_detokenizer)
        ids = smollm2_tokenizer().encode("Paris is lovely.", add_special_tokens=False)
        out = TokenOut(
            rid="r1",
            spec=DetokenizeSpec(stop=["lovely"]),
            new_token_ids=ids,
            prompt_tokens=3,
            cached_tokens=0,
            completion_tokens=len(ids),
        )
        push.send(msgspec.msgpack.encode(TokenBatchOut([out])))
        assert pull.poll(60_000), "no text came back"
        text = msgspec.msgpack.decode(pull.recv(), type=DetokenizerOutput)
        assert isinstance(text, TextOut) and text.text_delta == "Paris is "
        assert text.token_out.finish is not None and text.token_out.finish.matched == "lovely"
    finally:
        ctx.destroy(linger=0)
        paths.remove()
    output = child_output(process)
    assert BLOCKED not in output, output


def child_output(process: subprocess.Popen[bytes]) -> str:
    process.kill()
    return process.communicate(timeout=30)[0].decode(errors="replace")
