"""Two radixserve servers on the embedded SmolLM2 behind a real sglang-router process (the Rust
router from PyPI, in the test extras), with its cache-aware policy.

Native and OpenAI requests go through the router; two prompt families each stick to one worker
(every request after a family's first finds its prefix cached there); the router's fan-out
endpoints (/get_loads, /engine_metrics, /flush_cache) work on both workers; and once one worker
is stopped the router keeps serving every family from the other.

Skipped, saying why, only when sglang-router cannot be imported or its process cannot start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.server.http.conftest import ServerProcess, free_port, start_server, stop_server

pytestmark = pytest.mark.slow
ROUTER_READY_TIMEOUT_S = 180.0  # it registers each worker (/health, /server_info, /model_info)
ROUTER_STOP_TIMEOUT_S = 30.0
RECOVERY_TIMEOUT_S = 90.0
# Health checks every second, one failure marks a worker unhealthy: a stopped worker is noticed
# within seconds instead of the default three minutes.
ROUTER_FLAGS = (
    "--policy",
    "cache_aware",
    "--health-check-interval-secs",
    "1",
    "--health-failure-threshold",
    "1",
    "--worker-startup-timeout-secs",
    "300",
    "--log-level",
    "warn",
)
FAMILIES = {
    "a": "You are a careful botanist. Name the plant family first, then one fact. " * 6,
    "b": "Eres un historiador. Responde en una frase, con una fecha y un lugar. " * 6,
}


@dataclass
class RouterProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 6000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]


@dataclass
class Cluster:
    router: RouterProcess
    workers: list[ServerProcess]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.router.base_url, timeout=120)

    def logs(self) -> str:
        parts = [f"--- router log ---\n{self.router.log_tail()}"]
        parts += [f"--- worker {w.base_url} log ---\n{w.log_tail(2000)}" for w in self.workers]
        return "\n".join(parts)


def start_router(worker_urls: list[str], *flags: str) -> RouterProcess:
    try:
        import sglang_router  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"sglang-router is not installed (it is in the test extras): {exc}")
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="sglang-router-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--worker-urls", *worker_urls, *flags]
    # Its own Prometheus exporter listens on a fixed port unless told otherwise.
    command += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return RouterProcess(process, port, log.name)


def wait_ready(cluster: Cluster, healthy: int) -> None:
    """Until the router answers and counts `healthy` workers. A router process that exits
    first could not start at all: that (alone) skips."""
    router = cluster.router
    deadline = time.monotonic() + ROUTER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if router.process.poll() is not None:
            pytest.skip(f"the sglang-router process could not start:\n{router.log_tail()}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            ready = httpx.get(f"{router.base_url}/readiness", timeout=5)
            if ready.status_code == 200 and ready.json().get("healthy_workers") == healthy:
                return
        time.sleep(0.5)
    pytest.fail(f"the router did not see {healthy} healthy workers:\n{cluster.logs()}")


def stop_router(router: RouterProcess) -> None:
    if router.process.poll() is None:
        router.process.send_signal(signal.SIGTERM)
    try:
        router.process.wait(ROUTER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        router.process.kill()
        router.process.wait()
    os.unlink(router.log_path)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with ThreadPoolExecutor(2) as pool:  # the two servers load the model at the same time
        starts = [pool.submit(start_server, api_key=None) for _ in range(2)]
        workers = [s.result() for s in starts]
    router = start_router([w.base_url for w in workers], *ROUTER_FLAGS)
    handle = Cluster(router, workers)
    try:
        wait_ready(handle, healthy=2)
        yield handle
    finally:
        stop_router(router)
        for worker in workers:
            stop_server(worker)


def generate(client: httpx.Client, text: str, max_new_tokens: int = 2) -> dict:
    body = {"text": text, "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0}}
    reply = client.post("/generate", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def finished_per_worker(cluster: Cluster) -> list[int]:
    stats = [httpx.get(f"{w.base_url}/get_server_info", timeout=30).json() for w in cluster.workers]
    return [s["scheduler"]["requests_finished"] for s in stats]


def test_native_and_openai_requests_through_the_router(cluster: Cluster) -> None:
    with cluster.client() as client:
        out = generate(client, "The capital of France is", max_new_tokens=3)
        assert out["text"].startswith(" Paris") and out["meta_info"]["prompt_tokens"] == 5
        model = client.get("/v1/models").json()["data"][0]["id"]
        info = httpx.get(f"{cluster.workers[0].base_url}/server_info").json()
        assert model == info["served_model_name"]  # the router names workers' models as they do
        completion = client.post(
            "/v1/completions", json={"model": model, "prompt": "1, 2, 3,", "max_tokens": 3}
        )
        assert completion.status_code == 200, completion.text
        assert completion.json()["usage"]["completion_tokens"] == 3
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        chat = client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": messages, "max_tokens": 12, "temperature": 0},
        )
        assert chat.status_code == 200, chat.text
        assert "Paris" in chat.json()["choices"][0]["message"]["content"]
        stream = {"text": "Hello", "sampling_params": {"max_new_tokens": 3}, "stream": True}
        with client.stream("POST", "/generate", json=stream) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert response.status_code == 200 and events[-1] == "data: [DONE]" and len(events) >= 2
        assert client.get("/get_model_info").json()["is_generation"] is True


def test_prompt_families_stick_to_one_worker(cluster: Cluster) -> None:
    before = finished_per_worker(cluster)
    cached: dict[str, list[int]] = {name: [] for name in FAMILIES}
    prompt_tokens: dict[str, int] = {}
    with cluster.client() as client:
        for i in range(3):
            for name, prefix in FAMILIES.items():
                meta = generate(client, f"{prefix}Question {i}: why?")["meta_info"]
                cached[name].append(meta["cached_tokens"])
                prompt_tokens[name] = meta["prompt_tokens"]
    for name in FAMILIES:
        # Everything but the question and a partial last page was cached on the family's worker.
        assert all(c >= prompt_tokens[name] - 32 for c in cached[name][1:]), (cached, name)
        assert cached[name][1] > cached[name][0]
    served = [after - b for after, b in zip(finished_per_worker(cluster), before, strict=True)]
    assert sum(served) == 6 and all(n % 3 == 0 for n in served), served  # families stay whole


def test_the_routers_fan_out_endpoints(cluster: Cluster) -> None:
    with cluster.client() as client:
        loads = client.get("/get_loads").json()["workers"]
        assert sorted(w["worker"] for w in loads) == sorted(w.base_url for w in cluster.workers)
        assert all(w["load"] >= 0 for w in loads)  # -1 would mean /get_load failed
        metrics = client.get("/engine_metrics")
        assert metrics.status_code == 200, metrics.text
        labels: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(metrics.text):
            for sample in family.samples:
                if sample.name == "radixserve_requests_total":
                    worker = sample.labels["worker_addr"]
                    labels.setdefault(worker, set()).add(sample.labels["finish_reason"])
        assert len(labels) == 2 and all(v == {"stop", "length", "abort"} for v in labels.values())
        flushed = client.post("/flush_cache")
        assert flushed.status_code == 200, flushed.text
    for worker in cluster.workers:
        stats = httpx.get(f"{worker.base_url}/get_server_info", timeout=30).json()["scheduler"]
        assert stats["free_pages"] == stats["num_pages"]


def test_a_stopped_worker_leaves_the_router_serving_from_the_other(cluster: Cluster) -> None:
    stop_server(cluster.workers[0])
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    with cluster.client() as client:
        for prefix in FAMILIES.values():  # whichever family lived on the stopped worker
            body = {"text": f"{prefix}Question 9: why?", "sampling_params": {"max_new_tokens": 2}}
            while (reply := client.post("/generate", json=body)).status_code != 200:
                assert time.monotonic() < deadline, f"{reply.text}\n{cluster.logs()}"
                time.sleep(1)
        for i in range(4):
            for prefix in FAMILIES.values():
                generate(client, f"{prefix}Question {10 + i}: why?")
        ready = client.get("/readiness").json()
    assert ready["healthy_workers"] == 1, ready
