"""The native (SGLang-shaped) API against a real server: /generate in its forms, streaming,
logprobs, abort by rid, /flush_cache and the operational endpoints."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
import transformers

from tests.runtime.server.http.conftest import ServerProcess

pytestmark = pytest.mark.slow
PROMPT = "The capital of France is"
GREEDY = {"max_new_tokens": 3, "temperature": 0}
STEPS = GREEDY["max_new_tokens"]
LONG = {"max_new_tokens": 2000, "ignore_eos": True}  # runs until aborted


def sse_payloads(response: httpx.Response) -> list[Any]:
    events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def scheduler_stats(client: httpx.Client) -> dict[str, Any]:
    return client.get("/get_server_info").json()["scheduler"]


def wait_running(client: httpx.Client, count: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scheduler_stats(client)["running"] >= count:
            return
        time.sleep(0.1)
    pytest.fail("the request never started running")


def wait_idle(client: httpx.Client, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = scheduler_stats(client)
        if stats["running"] == 0 and stats["waiting"] == 0:
            return stats
        time.sleep(0.1)
    pytest.fail(f"the scheduler is still busy: {stats}")


def test_generate_single_text_and_input_ids(client: httpx.Client) -> None:
    out = client.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY}).json()
    assert out["text"].startswith(" Paris")
    meta = out["meta_info"]
    assert (
        meta["prompt_tokens"] == 5 and meta["completion_tokens"] == len(out["output_ids"]) == STEPS
    )
    assert meta["finish_reason"] == {"type": "length", "matched": None}
    assert meta["e2e_latency"] > 0 and meta["id"]
    by_ids = client.post(
        "/generate", json={"input_ids": [504, 3575, 282, 4649, 314], "sampling_params": GREEDY}
    ).json()
    assert by_ids["output_ids"] == out["output_ids"]


def test_generate_batch_returns_a_list(client: httpx.Client) -> None:
    prompts = [PROMPT, "1, 2, 3, 4,"]
    params = [GREEDY, {**GREEDY, "max_new_tokens": 2}]
    out = client.post("/generate", json={"text": prompts, "sampling_params": params}).json()
    assert isinstance(out, list) and len(out) == 2
    assert out[0]["text"].startswith(" Paris") and out[1]["meta_info"]["completion_tokens"] == 2
    ids = client.post(
        "/generate", json={"input_ids": [[504, 3575], [33, 30]], "sampling_params": GREEDY}
    ).json()
    assert [len(o["output_ids"]) for o in ids] == [STEPS, STEPS]


def test_generate_stream_carries_cumulative_text(client: httpx.Client) -> None:
    whole = client.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY}).json()
    body = {"text": PROMPT, "sampling_params": GREEDY, "stream": True}
    with client.stream("POST", "/generate", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = sse_payloads(response)
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1] == whole["text"] and chunks[-1]["output_ids"] == whole["output_ids"]
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])


def test_generate_logprobs(client: httpx.Client) -> None:
    body = {
        "text": PROMPT,
        "sampling_params": GREEDY,
        "return_logprob": True,
        "logprob_start_len": 0,
        "top_logprobs_num": 3,
        "return_text_in_logprobs": True,
    }
    meta = client.post("/generate", json=body).json()["meta_info"]
    out_lps, out_top = meta["output_token_logprobs"], meta["output_top_logprobs"]
    assert len(out_lps) == STEPS and len(out_top) == STEPS
    assert out_lps[0][2] == " Paris"
    for (lp, token, _), top in zip(out_lps, out_top, strict=True):
        assert top[0][1] == token and top[0][0] == pytest.approx(lp, abs=1e-4)
        assert len(top) == 3
    prompt_lps = meta["input_token_logprobs"]
    assert len(prompt_lps) == 5 and prompt_lps[0][0] is None
    assert [t for _, t, _ in prompt_lps] == [504, 3575, 282, 4649, 314]


def test_abort_by_rid(client: httpx.Client, server: ServerProcess) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        with server.client() as c:
            body = {"text": PROMPT, "sampling_params": LONG, "rid": "abort-me"}
            result["response"] = c.post("/generate", json=body)

    worker = threading.Thread(target=run)
    worker.start()
    wait_running(client)
    reply = client.post("/abort_request", json={"rid": "abort-me"}).json()
    assert reply["success"] is True
    worker.join(60)
    response = result["response"]
    assert response.status_code == 200
    meta = response.json()["meta_info"]
    assert meta["finish_reason"]["type"] == "abort"
    assert meta["finish_reason"]["code"] == "client"  # the caller asked: an answer, not an error
    assert meta["completion_tokens"] < LONG["max_new_tokens"]
    assert client.post("/abort_request", json={"rid": "abort-me"}).json()["success"] is False
    wait_idle(client)


def test_stop_string_finishes_the_request_in_the_scheduler(client: httpx.Client) -> None:
    """The detokenizer matches the stop string; the scheduler then stops generating (it would
    otherwise run for 2000 tokens) and counts the request finished, not aborted."""
    before = wait_idle(client)
    params = {"max_new_tokens": 2000, "ignore_eos": True, "temperature": 0, "stop": "8"}
    reply = client.post("/generate", json={"text": "1, 2, 3, 4, 5,", "sampling_params": params})
    assert reply.status_code == 200
    meta = reply.json()["meta_info"]
    assert meta["finish_reason"] == {"type": "stop", "matched": "8"}
    assert "8" not in reply.json()["text"] and meta["completion_tokens"] < 100
    after = wait_idle(client, timeout=10)
    assert after["requests_finished"] == before["requests_finished"] + 1
    assert after["requests_aborted"] == before["requests_aborted"]


def test_flush_cache(client: httpx.Client, server: ServerProcess) -> None:
    prompt = "A long shared prefix for the cache test. " * 10
    body = {"text": prompt, "sampling_params": {"max_new_tokens": 1}}
    client.post("/generate", json=body)
    assert client.post("/generate", json=body).json()["meta_info"]["cached_tokens"] >= 64

    # Refused while a request runs: its cached path is locked.
    def block() -> None:
        with server.client() as c:
            c.post("/generate", json={"text": PROMPT, "sampling_params": LONG, "rid": "blocker"})

    worker = threading.Thread(target=block)
    worker.start()
    wait_running(client)
    busy = client.post("/flush_cache")
    assert busy.status_code == 400 and "running" in busy.json()["error"]["message"]
    client.post("/abort_request", json={"rid": "blocker"})
    worker.join(60)
    wait_idle(client)
    flushed = client.post("/flush_cache")
    assert flushed.status_code == 200 and flushed.json()["success"] is True
    assert client.post("/generate", json=body).json()["meta_info"]["cached_tokens"] == 0


def test_operational_endpoints(client: httpx.Client, server: ServerProcess) -> None:
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}  # no key needed
    assert client.get("/health_generate").status_code == 200
    info = client.get("/get_model_info").json()
    assert info["is_generation"] is True and info["model_path"].endswith(".gguf")
    # An HF tokenizer directory (the GGUF's tokenizer, converted), so clients such as SGLang's
    # bench_serving load the server's tokenizer from it.
    tokenizer = transformers.AutoTokenizer.from_pretrained(info["tokenizer_path"])
    text = "The capital of France is"
    tokenized = client.post("/tokenize", json={"prompt": text}).json()
    assert tokenizer.encode(text) == tokenized["tokens"]
    server_info = client.get("/get_server_info").json()
    assert server_info["server_args"]["max_total_tokens"] == 32768
    assert server_info["server_args"]["api_key"] == "<set>"  # the secret is never echoed
    assert server_info["runtime"]["vocab_size"] == 49152
    assert {"running", "waiting", "num_pages"} <= set(server_info["scheduler"])
