"""SGLang's API surface on a real server: /generate with SGLang's extra fields, /server_info and
/model_info in SGLang's flat shapes, /get_load, GET /flush_cache, abort_all, metrics that leave
out `log_metrics: false` requests, and the clear 501s for what SGLang has and radixserve not."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.server.http.conftest import ServerProcess
from tests.runtime.server.http.test_sglang_fields import ROUTER_BODY

pytestmark = pytest.mark.slow
LONG = {"max_new_tokens": 2000, "ignore_eos": True}  # runs until aborted


def requests_total(client: httpx.Client) -> float:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(
        s.value for f in families for s in f.samples if s.name == "radixserve_requests_total"
    )


def test_generate_takes_the_routers_body_and_sglang_sampling_names(client: httpx.Client) -> None:
    reply = client.post("/generate", json=ROUTER_BODY)
    assert reply.status_code == 200, reply.text
    assert reply.json()["meta_info"]["completion_tokens"] == 1
    sampling = {"max_new_tokens": 4, "temperature": 0.7, "sampling_seed": 5, "stop_regex": None}
    body = {"text": "Once upon a time", "sampling_params": sampling, "session_id": "s"}
    first, second = (client.post("/generate", json=body).json()["text"] for _ in range(2))
    assert first == second  # sampling_seed is the seed


@pytest.mark.parametrize(
    ("extra", "status", "field"),
    [
        ({"return_hidden_states": True}, 400, "return_hidden_states"),
        ({"image_data": "https://example.com/cat.png"}, 400, "image_data"),
        ({"background": True}, 400, "background"),
        ({"return_entropy": True}, 400, "return_entropy"),
        ({"lora_path": "adapter"}, 400, "lora_path"),
        ({"data_parallel_rank": 1}, 400, "data_parallel_rank"),  # one replica: rank 0 only
        ({"routed_dp_rank": 0, "data_parallel_rank": 1}, 400, "routed_dp_rank"),
        ({"model": "another-model"}, 404, "model"),
        ({"sampling_params": {"no_stop_trim": True}}, 400, "no_stop_trim"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(
    client: httpx.Client, extra: dict[str, Any], status: int, field: str
) -> None:
    reply = client.post("/generate", json={"text": "hi", **extra})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert field == error["param"] or field in error["message"], error


def test_model_name_and_rank_zero_are_honoured(client: httpx.Client) -> None:
    name = client.get("/v1/models").json()["data"][0]["id"]
    body = {"text": "hi", "model": name, "data_parallel_rank": 0, "no_logs": True}
    body["sampling_params"] = {"max_new_tokens": 1}
    assert client.post("/generate", json=body).status_code == 200


def test_log_metrics_false_stays_out_of_metrics(client: httpx.Client) -> None:
    body = {"text": "hi", "sampling_params": {"max_new_tokens": 1}}
    before = requests_total(client)
    assert client.post("/generate", json={**body, "log_metrics": False}).status_code == 200
    assert client.get("/health_generate").status_code == 200  # a probe does not count either
    assert requests_total(client) == before
    assert client.post("/generate", json=body).status_code == 200
    assert requests_total(client) == before + 1


def test_server_info_and_model_info_in_sglangs_flat_shape(client: httpx.Client) -> None:
    info = client.get("/server_info").json()
    assert info["dp_size"] == 1 and info["max_total_tokens"] == 32768  # server args, flat
    assert info["api_key"] == "<set>"
    assert info["model_path"].endswith(".gguf") and info["version"]
    assert info["served_model_name"] == client.get("/v1/models").json()["data"][0]["id"]
    assert info["max_total_num_tokens"] >= 32768 and info["context_length"] == 8192
    assert info["max_req_input_len"] == 8191 and info["vocab_size"] == 49152
    assert len(info["internal_states"]) == 1 and "running" in info["internal_states"][0]
    model = client.get("/model_info").json()
    assert model == client.get("/get_model_info").json()
    assert model["is_generation"] is True and model["weight_version"] == "default"
    assert model["served_model_name"] == info["served_model_name"]


def test_get_load_counts_requests_and_tokens(client: httpx.Client, server: ServerProcess) -> None:
    def blocker() -> None:
        with server.client() as c:
            c.post("/generate", json={"text": "Count:", "sampling_params": LONG, "rid": "load-1"})

    worker = threading.Thread(target=blocker)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while (load := client.get("/get_load").json())[0]["num_reqs"] == 0:
            assert time.monotonic() < deadline, load
            time.sleep(0.1)
        # Waiting (the idle scheduler gathers for a moment) or running, its tokens count.
        assert load[0]["dp_rank"] == 0 and load[0]["num_tokens"] > 0
        assert set(load[0]) == {"dp_rank", "num_reqs", "num_waiting_reqs", "num_tokens"}
    finally:  # a failed check leaves no long request running into the next tests
        assert client.post("/abort_request", json={"abort_all": True}).json()["success"] is True
        worker.join(60)
    deadline = time.monotonic() + 30
    while (load := client.get("/get_load").json())[0]["num_reqs"]:
        assert time.monotonic() < deadline, load
        time.sleep(0.1)
    assert load[0]["num_tokens"] == 0  # what stays cached is free to evict
    assert client.get("/flush_cache").status_code == 200  # SGLang takes GET too


@pytest.mark.parametrize("path", ["/start_profile", "/stop_profile", "/concate_and_append_request"])
def test_what_sglang_has_and_radixserve_not_is_a_clear_501(client: httpx.Client, path: str) -> None:
    reply = client.post(path, json={"src_rids": ["a"], "dst_rid": "b"})
    assert reply.status_code == 501
    message = reply.json()["error"]["message"]
    assert path in message and "not supported" in message
