"""Routing over two copies of SmolLM2, cache-aware vs round-robin, in one of two set-ups:

    --via dp       one server with two scheduler replicas (`--dp-size 2`, the in-process router)
    --via router   two servers behind SGLang's router (`sglang-router`, as across machines)

Four few-shot prompt families (different 3-shot prefixes from the `logiqa` task of the `evals`
package) and their questions arrive shuffled, 8 at a time. A prefix is reused only where it was
computed: round-robin spreads every family over both copies (each computes every prefix),
cache-aware routing keeps a family on one. Both methods run one after the other in one run (with
--via router, on the same two servers, their caches flushed in between); per method it prints
wall time, prompt tokens, tokens served from the cache and prefill tokens computed.

    python -m benchmarks.bench_dp_routing [--via dp|router] [--families 4] [--questions 12]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import httpx

import radixserve as rs
from benchmarks.fewshot_data import few_shot_prefix, few_shot_prompt, load_examples

METHODS = ("cache_aware", "round_robin")  # the names of both routers
ROUTER_READY_TIMEOUT_S = 180.0
CLIENT_TIMEOUT_S = 600.0


def send_all(url: str, prompts: list[str], concurrency: int) -> tuple[float, list[dict]]:
    """Wall time and each request's meta_info."""
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:

        def one(prompt: str) -> dict:
            body = {"text": prompt, "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
            reply = client.post("/generate", json=body)
            reply.raise_for_status()
            return reply.json()["meta_info"]

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            metas = list(pool.map(one, prompts))
        return time.perf_counter() - start, metas


def result(wall_s: float, metas: list[dict], prefill: int, split: list[int]) -> dict:
    return {
        "wall_s": wall_s,
        "prompt_tokens": sum(m["prompt_tokens"] for m in metas),
        "cached_tokens": sum(m["cached_tokens"] for m in metas),
        "prefill_tokens": prefill,
        "split": "/".join(map(str, split)),
    }


def run_dp(method: str, prompts: list[str], concurrency: int, pool_tokens: int) -> dict:
    with rs.Runtime(dp_size=2, load_balance_method=method, max_total_tokens=pool_tokens) as runtime:
        wall, metas = send_all(runtime.url, prompts, concurrency)
        stats = httpx.get(f"{runtime.url}/get_server_info", timeout=60).json()["scheduler"]
    split = [r["requests_finished"] for r in stats["replicas"]]
    return result(wall, metas, stats["prefill_tokens"], split)


def scheduler_stats(urls: list[str]) -> list[dict]:
    return [httpx.get(f"{u}/get_server_info", timeout=60).json()["scheduler"] for u in urls]


def run_router(method: str, urls: list[str], prompts: list[str], concurrency: int) -> dict:
    for url in urls:  # each method starts from empty caches
        httpx.post(f"{url}/flush_cache", timeout=60).raise_for_status()
    before = scheduler_stats(urls)
    with sglang_router(urls, method) as router_url:
        wall, metas = send_all(router_url, prompts, concurrency)
    pairs = list(zip(scheduler_stats(urls), before, strict=True))
    prefill = sum(a["prefill_tokens"] - b["prefill_tokens"] for a, b in pairs)
    split = [a["requests_finished"] - b["requests_finished"] for a, b in pairs]
    return result(wall, metas, prefill, split)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def sglang_router(worker_urls: list[str], policy: str) -> Iterator[str]:
    """`python -m sglang_router.launch_router` in front of the workers; yields its URL once it
    counts every worker healthy."""
    port = free_port()
    command = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--worker-urls", *worker_urls, "--policy", policy]
    command += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    command += ["--log-level", "warn"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_router(url, process, len(worker_urls), log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_router(url: str, process: subprocess.Popen[bytes], workers: int, log: IO[bytes]) -> None:
    deadline = time.monotonic() + ROUTER_READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            ready = httpx.get(f"{url}/readiness", timeout=5)
            if ready.status_code == 200 and ready.json().get("healthy_workers") == workers:
                return
        time.sleep(0.5)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-4000:]
    raise SystemExit(f"sglang-router did not become ready (pip install sglang-router):\n{tail}")


def build_prompts(families: int, shots: int, questions: int) -> list[str]:
    system, examples = load_examples("logiqa", "logiqa.jsonl")
    prefixes = [
        few_shot_prefix(system, examples[f * shots : (f + 1) * shots]) for f in range(families)
    ]
    pool = examples[families * shots :]
    prompts = [
        few_shot_prompt(prefix, pool[(f * questions + q) % len(pool)].question)
        for f, prefix in enumerate(prefixes)
        for q in range(questions)
    ]
    random.Random(0).shuffle(prompts)
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--via", choices=("dp", "router"), default="dp")
    parser.add_argument("--families", type=int, default=4)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--questions", type=int, default=12, help="per family")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--max-total-tokens", type=int, default=16384, help="KV pool of each copy, in tokens"
    )
    args = parser.parse_args()
    prompts = build_prompts(args.families, args.shots, args.questions)
    if args.via == "dp":
        results = {
            method: run_dp(method, prompts, args.concurrency, args.max_total_tokens)
            for method in METHODS
        }
        setup = f"2 replicas (--dp-size 2) of {args.max_total_tokens} KV tokens"
    else:
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(rs.Runtime(max_total_tokens=args.max_total_tokens))
                for _ in range(2)
            ]
            urls = [s.url for s in servers]
            results = {m: run_router(m, urls, prompts, args.concurrency) for m in METHODS}
        setup = f"2 servers of {args.max_total_tokens} KV tokens behind sglang-router"
    print(
        f"\n{len(prompts)} requests: {args.families} families of {args.shots}-shot logiqa prefixes,"
        f" shuffled, {args.concurrency} at a time, {setup}"
    )
    print(
        f"{'method':>12} | {'wall s':>7} | {'prompt tok':>10} | {'cached':>7} | {'prefill':>7} | split"
    )
    for method, r in results.items():
        print(
            f"{method:>12} | {r['wall_s']:>7.1f} | {r['prompt_tokens']:>10} | "
            f"{r['cached_tokens']:>7} | {r['prefill_tokens']:>7} | {r['split']}"
        )
    aware, rr = results["cache_aware"], results["round_robin"]
    print(
        f"cache-aware vs round-robin: {rr['prefill_tokens'] / aware['prefill_tokens']:.2f}x fewer "
        f"prefill tokens, {rr['wall_s'] / aware['wall_s']:.2f}x faster"
    )


if __name__ == "__main__":
    main()
