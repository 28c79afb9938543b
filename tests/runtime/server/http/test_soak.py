"""Soak: a server with a 64-page KV pool under a mixed, overlapping load for a while.

Workers run side by side until the deadline: greedy requests on prompts that share a long prefix
(checked token by token against each prompt's answer alone), streams whose clients vanish,
requests aborted by rid, malformed requests (bad grammars among them), sampled OpenAI chat with
`n` = 2, structured outputs (JSON schema and forced tool calls, each checked to parse and follow
its schema, with jump-forward chunks in the mix), and cache flushes.
The pool is small enough that eviction and retraction happen all the time. Afterwards the server
must be idle and healthy, every page free after a flush, and the radix cache's integrity check
clean; no request may hang (each has a deadline).

    SOAK_SECONDS=600 python -m pytest tests/runtime/server/http/test_soak.py -q   # a longer soak
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from tests.runtime.server.http.conftest import ServerProcess, start_server, stop_server

pytestmark = pytest.mark.slow
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "45"))
# The slowest request of a 45 s run took 58 s on a quiet 2-core machine and 251 s on one
# loaded by three other test runs (a 320-token answer at up to a second per step); hitting
# this means a hang.
REQUEST_TIMEOUT_S = 900.0
# N-gram speculation is on: greedy outputs must still match their references token by token.
POOL_FLAGS = (
    "--max-total-tokens",
    "1024",
    "--page-size",
    "16",
    "--chunked-prefill-size",
    "128",
    "--speculative-algorithm",
    "ngram",
)
SHARED = (
    "You are a careful assistant. Answer each question in one short sentence, "
    "without lists, code or follow-up questions. "
) * 6
QUESTIONS = [
    "What is the capital of Italy?",
    "Why is the sky blue?",
    "Name a prime number greater than ten.",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is water made of?",
]
GREEDY_MAX = 24
# Long greedy answers outgrow what admission reserved for them, so decoding runs the pool dry and
# the scheduler must retract; the answers must still match the reference exactly.
LONG_PROMPTS = ["List the numbers from one to two hundred:", "Write a long story about a fox:"]
LONG_MAX = 320
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 40},
        "confidence": {"enum": ["low", "medium", "high"]},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
ANSWER_SCHEMA_TEXT = json.dumps(ANSWER_SCHEMA)
LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"topic": {"type": "string", "maxLength": 24}},
            "required": ["topic"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def pool_server() -> Iterator[ServerProcess]:
    handle = start_server(*POOL_FLAGS, api_key=None)
    yield handle
    assert stop_server(handle) == 0, handle.log_tail()


def greedy_body(prompt: str, max_new_tokens: int, stream: bool = False) -> dict[str, object]:
    params = {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True}
    return {"text": prompt, "sampling_params": params, "stream": stream}


async def streamed_ids(client: httpx.AsyncClient, body: dict[str, object]) -> list[int]:
    """The output ids of a streamed /generate (each event carries all ids so far)."""
    ids: list[int] = []
    async with client.stream("POST", "/generate", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                ids = json.loads(line[6:])["output_ids"]
    return ids


class Soak:
    def __init__(self, client: httpx.AsyncClient, reference: dict[str, list[int]]) -> None:
        self.client = client
        self.reference = reference
        self.deadline = time.monotonic() + SOAK_SECONDS
        self.done: Counter[str] = Counter()
        self.slowest: dict[str, float] = defaultdict(float)  # seconds, per kind of work
        self.rng = random.Random(0)

    async def loop(self, name: str, action: Callable[[], Awaitable[None]]) -> None:
        while time.monotonic() < self.deadline:
            started = time.monotonic()
            await asyncio.wait_for(action(), REQUEST_TIMEOUT_S)
            self.done[name] += 1
            self.slowest[name] = max(self.slowest[name], time.monotonic() - started)

    async def greedy(self) -> None:
        prompt = SHARED + self.rng.choice(QUESTIONS)
        n = self.rng.randint(1, GREEDY_MAX)
        body = greedy_body(prompt, n, stream=self.rng.random() < 0.5)
        if body["stream"]:
            ids = await streamed_ids(self.client, body)
        else:
            response = await self.client.post("/generate", json=body)
            assert response.status_code == 200, response.text
            ids = response.json()["output_ids"]
        assert ids == self.reference[prompt][:n], prompt

    async def long_greedy(self) -> None:
        prompt = self.rng.choice(LONG_PROMPTS)
        response = await self.client.post("/generate", json=greedy_body(prompt, LONG_MAX))
        assert response.status_code == 200, response.text
        assert response.json()["output_ids"] == self.reference[prompt], prompt

    async def vanishing_stream(self) -> None:
        params = {"max_new_tokens": 600, "ignore_eos": True, "temperature": 0.7}
        body = {"text": self.rng.choice(QUESTIONS), "sampling_params": params, "stream": True}
        events = self.rng.randint(1, 40)
        async with self.client.stream("POST", "/generate", json=body) as response:
            async for line in response.aiter_lines():
                events -= line.startswith("data: ")
                if events <= 0:
                    break  # leaving the block closes the connection mid-stream

    async def abort_by_rid(self) -> None:
        rid = f"soak-{uuid.uuid4().hex}"
        params = {"max_new_tokens": 600, "ignore_eos": True}
        body = {"text": SHARED + "Count slowly:", "sampling_params": params, "rid": rid}
        pending = asyncio.ensure_future(self.client.post("/generate", json=body))
        await asyncio.sleep(self.rng.uniform(0.0, 4.0))
        await self.client.post("/abort_request", json={"rid": rid})
        response = await pending
        # An abort the caller asked for is an answer with finish_reason abort, not an error.
        assert response.status_code == 200, response.text
        finish = response.json()["meta_info"]["finish_reason"]["type"]
        assert finish in ("abort", "length")
        self.done[f"abort_by_rid finished as {finish}"] += 1

    async def malformed(self) -> None:
        body = self.rng.choice(
            [
                {"text": ""},
                {"text": "hi", "sampling_params": {"max_new_tokens": -1}},
                {"text": "hi", "sampling_params": {"temperature": -0.5}},
                {"input_ids": [10**9]},
                {"text": "hi", "sampling_params": {"max_new_tokens": 5000}},  # exceeds the pool
                {"text": 7},
                {"text": "hi", "sampling_params": {"regex": "(unclosed"}},
                {"text": "hi", "sampling_params": {"json_schema": "[]"}},
            ]
        )
        response = await self.client.post("/generate", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"]["message"]
        await asyncio.sleep(0.05)  # a steady trickle, not a flood that starves the other workers

    async def sampled_chat(self) -> None:
        body = {
            "messages": [{"role": "user", "content": self.rng.choice(QUESTIONS)}],
            "n": 2,
            "max_tokens": 8,
            "temperature": 0.8,
            "seed": self.rng.randint(0, 1000),
        }
        response = await self.client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert len(response.json()["choices"]) == 2

    async def structured(self) -> None:
        question = self.rng.choice(QUESTIONS)
        if self.rng.random() < 0.5:
            params = {"max_new_tokens": 64, "temperature": 0.7, "json_schema": ANSWER_SCHEMA_TEXT}
            body = {"text": SHARED + question, "sampling_params": params}
            response = await self.client.post("/generate", json=body)
            assert response.status_code == 200, response.text
            out = response.json()
            if out["meta_info"]["finish_reason"]["type"] == "stop":
                value = json.loads(out["text"])
                assert set(value) == {"answer", "confidence"}, out["text"]
            self.done["structured json"] += 1
            return
        body = {
            "messages": [{"role": "user", "content": question}],
            "tools": [LOOKUP_TOOL],
            "tool_choice": "required",
            "max_tokens": 48,
            "temperature": 0,
        }
        response = await self.client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        if choice["finish_reason"] == "tool_calls":
            for call in choice["message"]["tool_calls"]:
                assert set(json.loads(call["function"]["arguments"])) == {"topic"}
        self.done["structured tool call"] += 1

    async def flush(self) -> None:
        await asyncio.sleep(2.0)
        response = await self.client.post("/flush_cache")
        assert response.status_code in (200, 400), response.text  # 400: busy, by design


async def run_soak(server: ServerProcess) -> Counter[str]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as client:
        reference = {}
        for prompt, n in [(SHARED + q, GREEDY_MAX) for q in QUESTIONS] + [
            (p, LONG_MAX) for p in LONG_PROMPTS
        ]:
            response = await client.post("/generate", json=greedy_body(prompt, n))
            reference[prompt] = response.json()["output_ids"]
        soak = Soak(client, reference)
        workers = (
            [("greedy", soak.greedy)] * 4
            + [("long_greedy", soak.long_greedy)] * 3
            + [
                ("vanishing_stream", soak.vanishing_stream),
                ("vanishing_stream", soak.vanishing_stream),
                ("abort_by_rid", soak.abort_by_rid),
                ("abort_by_rid", soak.abort_by_rid),
                ("malformed", soak.malformed),
                ("sampled_chat", soak.sampled_chat),
                ("structured", soak.structured),
                ("flush", soak.flush),
            ]
        )
        await asyncio.gather(*(soak.loop(name, action) for name, action in workers))
        print("slowest request per kind (s):", {k: round(v, 1) for k, v in soak.slowest.items()})
        return soak.done


def wait_idle(client: httpx.Client) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = client.get("/get_server_info").json()["scheduler"]
        if stats["running"] == 0 and stats["waiting"] == 0:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"the server never went idle: {stats}")


def test_soak_mixed_load_leaves_nothing_behind(pool_server: ServerProcess) -> None:
    done = asyncio.run(run_soak(pool_server))
    with pool_server.client() as client:
        stats = wait_idle(client)
        assert stats["integrity"] == "ok"
        assert client.post("/flush_cache").status_code == 200
        stats = client.get("/get_server_info").json()["scheduler"]
        assert stats["free_pages"] == stats["num_pages"]
        assert stats["integrity"] == "ok"
        assert client.get("/health_generate").status_code == 200
    # The load did what it was meant to: every kind of work ran, under real memory pressure.
    assert all(
        done[name] > 0
        for name in ("greedy", "long_greedy", "vanishing_stream", "abort_by_rid", "structured")
    ), done
    assert stats["jump_forward_tokens"] > 0
    assert stats["spec_accepted_tokens"] > 0
    # Not an equality: an abort that lands before the request reaches the scheduler is settled
    # by the tokenizer side and never counted there.
    assert stats["requests_aborted"] > 0
    assert stats["cache"]["evicted_pages"] > 0, stats["cache"]
    print(
        f"soak {SOAK_SECONDS:.0f} s: {dict(done)}, retractions {stats['retractions']}, "
        f"evicted pages {stats['cache']['evicted_pages']}"
    )
    assert "Traceback" not in pool_server.log_tail(200_000)
