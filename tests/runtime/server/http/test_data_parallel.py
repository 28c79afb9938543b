"""`--dp-size 2`: two scheduler replicas behind one server, on the embedded SmolLM2.

Requests alternate between two prompt families; cache-aware routing keeps each family on one
replica, so every request after a family's first finds its prefix cached. Aborts reach the
replica that holds the request; flush and stats cover both replicas.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.server.http.conftest import ServerProcess, start_server, stop_server

pytestmark = pytest.mark.slow
FAMILIES = {
    "a": "You are a chemistry tutor. Explain every answer with one formula and one example. " * 6,
    "b": "Tu es un guide touristique. Réponds en français, brièvement et avec enthousiasme. " * 6,
}


@pytest.fixture(scope="module")
def dp_server() -> Iterator[ServerProcess]:
    handle = start_server("--dp-size", "2", "--max-total-tokens", "8192", api_key=None)
    yield handle
    assert stop_server(handle) == 0, handle.log_tail()


def generate(client: httpx.Client, text: str, **params: object) -> dict:
    body = {"text": text, "sampling_params": {"max_new_tokens": 2, **params}}
    reply = client.post("/generate", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def scheduler_stats(client: httpx.Client) -> dict:
    return client.get("/get_server_info").json()["scheduler"]


def test_cache_aware_routing_keeps_each_family_on_one_replica(dp_server: ServerProcess) -> None:
    with dp_server.client() as client:
        cached: dict[str, list[int]] = {"a": [], "b": []}
        prompt_tokens = {}
        for i in range(3):
            for name, prefix in FAMILIES.items():
                meta = generate(client, f"{prefix}Question {i}: why?")["meta_info"]
                cached[name].append(meta["cached_tokens"])
                prompt_tokens[name] = meta["prompt_tokens"]
        stats = scheduler_stats(client)
    for name in FAMILIES:
        assert cached[name][0] == 0
        # Everything but the question and a partial last page came from the replica's cache.
        assert all(c >= prompt_tokens[name] - 32 for c in cached[name][1:]), cached
    replicas = stats["replicas"]
    assert len(replicas) == 2
    assert sorted(r["requests_finished"] for r in replicas) == [3, 3]
    assert stats["requests_finished"] == 6  # merged: the sum over replicas


def test_abort_reaches_the_right_replica_and_flush_covers_both(dp_server: ServerProcess) -> None:
    with dp_server.client() as client:
        before = scheduler_stats(client)["requests_aborted"]
        body = {
            "text": FAMILIES["b"] + "Count forever:",
            "sampling_params": {"max_new_tokens": 2000, "ignore_eos": True},
            "stream": True,
            "rid": "dp-endless",
        }
        with client.stream("POST", "/generate", json=body) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            assert client.post("/abort_request", json={"rid": "dp-endless"}).json()["success"]
            last = [line for line in lines if line.startswith("data: ")][-1]
        assert last == "data: [DONE]"
        deadline = time.monotonic() + 30
        while (stats := scheduler_stats(client))["running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stats["requests_aborted"] == before + 1
        assert client.post("/flush_cache").status_code == 200
        stats = scheduler_stats(client)
        assert stats["free_pages"] == stats["num_pages"]
        assert all(r["free_pages"] == r["num_pages"] for r in stats["replicas"])
        assert stats["integrity"] == "ok"
        metrics = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
        assert "radixserve_num_running_reqs" in metrics


def test_a_request_naming_a_replica_runs_there(dp_server: ServerProcess) -> None:
    """sglang-router's --dp-aware mode sends `data_parallel_rank` (SGLang's current name is
    `routed_dp_rank`): the request runs on that replica whatever the cache-aware router says."""
    with dp_server.client() as client:
        for name in ("data_parallel_rank", "routed_dp_rank"):
            for rank in (0, 1):
                before = [r["requests_finished"] for r in scheduler_stats(client)["replicas"]]
                body = {"text": FAMILIES["a"], "sampling_params": {"max_new_tokens": 1}}
                reply = client.post("/generate", json={**body, name: rank})
                assert reply.status_code == 200, reply.text
                after = [r["requests_finished"] for r in scheduler_stats(client)["replicas"]]
                assert after[rank] == before[rank] + 1 and after[1 - rank] == before[1 - rank]
        refused = client.post("/generate", json={"text": "hi", "data_parallel_rank": 2})
        assert (
            refused.status_code == 400 and refused.json()["error"]["param"] == "data_parallel_rank"
        )
