"""Under load: 32 concurrent clients get the greedy output each prompt gets alone, /metrics
parses and moves, and a client that disconnects mid-stream has its request aborted."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.server.http.conftest import ServerProcess

pytestmark = pytest.mark.slow
CLIENTS = 32
PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4,",
    "Once upon a time",
    "The largest planet in the solar system is",
]
MAX_TOKENS = 3
ENDLESS = {"max_new_tokens": 3000, "ignore_eos": True}  # runs until its client goes away


def metric_values(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        sample.name + str(sorted(sample.labels.items()) if sample.labels else ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def complete_all(server: ServerProcess, prompts: list[str]) -> list[str]:
    async with openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=300
    ) as oai:

        async def one(prompt: str) -> str:
            reply = await oai.completions.create(
                model=None,
                prompt=prompt,
                temperature=0,
                max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
            )
            return reply.choices[0].text

        return list(await asyncio.gather(*(one(p) for p in prompts)))


def test_concurrent_clients_match_sequential(client: httpx.Client, server: ServerProcess) -> None:
    before = metric_values(client)
    alone = {p: asyncio.run(complete_all(server, [p]))[0] for p in PROMPTS}
    batch = [PROMPTS[i % len(PROMPTS)] for i in range(CLIENTS)]
    together = asyncio.run(complete_all(server, batch))
    assert together == [alone[p] for p in batch]
    after = metric_values(client)
    # /metrics parsed, and the counters moved under that load.
    assert (
        after["radixserve_requests_total[('finish_reason', 'length')]"]
        >= before.get("radixserve_requests_total[('finish_reason', 'length')]", 0) + CLIENTS
    )
    assert after["radixserve_time_to_first_token_seconds_count"] >= CLIENTS + len(PROMPTS)
    assert after["radixserve_e2e_request_latency_seconds_count"] > before.get(
        "radixserve_e2e_request_latency_seconds_count", 0
    )
    assert after["radixserve_inter_token_latency_seconds_count"] > 0
    assert after["radixserve_decode_tokens_total"] > before.get("radixserve_decode_tokens_total", 0)
    assert after["radixserve_prefill_tokens_total"] > 0
    assert after["radixserve_cache_hit_tokens_total"] >= 0
    for name in (
        "radixserve_num_running_reqs",
        "radixserve_num_waiting_reqs",
        "radixserve_kv_usage",
        "radixserve_cache_hit_rate",
        "radixserve_retractions_total",
        "radixserve_evictions_total",
    ):
        assert name in after, name
    assert 0 <= after["radixserve_kv_usage"] <= 1


def wait_idle_and_aborted(client: httpx.Client, aborted_before: int) -> None:
    """The connection is closed: the scheduler must drop the request soon after."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = client.get("/get_server_info").json()["scheduler"]
        if stats["running"] == 0 and stats["waiting"] == 0:
            break
        time.sleep(0.2)
    assert stats["running"] == 0 and stats["waiting"] == 0
    assert stats["requests_aborted"] > aborted_before


def aborted_so_far(client: httpx.Client) -> int:
    return client.get("/get_server_info").json()["scheduler"]["requests_aborted"]


def test_disconnect_mid_stream_aborts_the_request(
    client: httpx.Client, server: ServerProcess
) -> None:
    before = aborted_so_far(client)
    body = {"text": "Count forever:", "sampling_params": ENDLESS, "stream": True}
    with server.client() as streamer, streamer.stream("POST", "/generate", json=body) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    wait_idle_and_aborted(client, before)


def test_disconnect_while_waiting_for_a_whole_answer_aborts(
    client: httpx.Client, server: ServerProcess
) -> None:
    before = aborted_so_far(client)
    body = {"prompt": "Count forever:", "max_tokens": ENDLESS["max_new_tokens"], "ignore_eos": True}
    with server.client(timeout=3) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/completions", json=body)
    wait_idle_and_aborted(client, before)
