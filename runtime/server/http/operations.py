"""The operational endpoints of the native API, in SGLang's shapes.

What SGLang's clients call on a server besides /generate: sglang-router (health, /server_info
and /model_info when it registers a worker, /get_load, /flush_cache, /metrics) and SGLang's
frontend `RuntimeEndpoint` (/get_model_info, /get_server_info, /flush_cache, profiling, KV
concatenation). Each works, or answers with a message that says what to do instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ...wire.stats import SchedulerStats
from .body import json_response, read_json
from .errors import ApiError
from .generation import Generation
from .native import state_of
from .protocol import (
    AbortRequest,
    AbortResponse,
    FlushCacheResponse,
    HealthResponse,
    LoadEntry,
    ModelInfo,
    ServerInfo,
    SGLangServerInfo,
)


def package_version() -> str:
    try:
        return importlib.metadata.version("radixserve")
    except importlib.metadata.PackageNotFoundError:  # a bare checkout, never installed
        return "unknown"


VERSION = package_version()


async def health(request: Request) -> Response:
    state = state_of(request)
    if state.healthy:
        return json_response(HealthResponse("ok"))
    reason = state.death_reason or (state.tm.error if state.tm else "starting")
    return json_response(HealthResponse("unhealthy", reason), 503)


async def health_generate(request: Request) -> Response:
    """Healthy only if a one-token greedy generation completes in time (kept out of /metrics,
    like SGLang's probe)."""
    state = state_of(request)
    req = state.builder.build(
        state.new_rid("health"),
        state.builder.encode("ping") or [0],
        {"max_new_tokens": 1, "temperature": 0.0},
    )
    probe = Generation(state, req, log_metrics=False)
    try:
        await asyncio.wait_for(probe.run(), state.config.health_generate_timeout_s)
    except (ApiError, asyncio.TimeoutError) as exc:
        message = exc.message if isinstance(exc, ApiError) else "generation timed out"
        return json_response(HealthResponse("unhealthy", message), 503)
    return json_response(HealthResponse("ok"))


async def model_info(request: Request) -> Response:
    """GET /model_info and /get_model_info (SGLang's current and former names)."""
    state = state_of(request)
    info = ModelInfo(
        model_path=state.model_path,
        tokenizer_path=state.tokenizer_path or state.model_path,
        served_model_name=state.model_name,
        chat_template=getattr(state.tokenizer, "chat_template", None),
        bos_token=getattr(state.tokenizer, "bos_token", None),
        eos_token=getattr(state.tokenizer, "eos_token", None),
    )
    return json_response(info)


async def get_server_info(request: Request) -> Response:
    """radixserve's nested shape: arguments, runtime limits, HTTP limits, scheduler figures."""
    state = state_of(request)
    scheduler = await state.scheduler_stats() if state.healthy else None
    info = ServerInfo(
        server_args=state.public_args(),
        runtime=state.info,
        http=dataclasses.asdict(state.config),
        scheduler=scheduler,
        healthy=state.healthy,
    )
    return json_response(info)


async def server_info(request: Request) -> Response:
    """SGLang's flat shape: every server argument at the top level, plus the resolved model,
    version, limits, and each replica's scheduler figures under `internal_states`."""
    state = state_of(request)
    stats = await state.scheduler_stats() if state.healthy else None
    extras = SGLangServerInfo(
        model_path=state.model_path,
        tokenizer_path=state.tokenizer_path or state.model_path,
        served_model_name=state.model_name,
        version=VERSION,
        context_length=state.info.context_len,
        max_total_num_tokens=state.info.pool_tokens,
        max_req_input_len=state.info.context_len - 1,
        vocab_size=state.info.vocab_size,
        healthy=state.healthy,
        internal_states=per_replica(stats),
    )
    flat: dict[str, Any] = {**state.public_args(), **msgspec.to_builtins(extras)}
    return json_response(flat)


async def get_load(request: Request) -> Response:
    """One entry per data-parallel replica (sglang-router's power-of-two policy reads
    `num_tokens`). 503 while the runtime is down, like generation."""
    state = state_of(request)
    state.manager()  # 503 once the runtime is down (scheduler_stats would serve old figures)
    stats = await state.scheduler_stats()
    if stats is None:
        raise ApiError(503, "the scheduler has not reported its load yet", code="unavailable")
    return json_response([load_entry(rank, s) for rank, s in enumerate(per_replica(stats))])


def per_replica(stats: SchedulerStats | None) -> list[SchedulerStats]:
    if stats is None:
        return []
    return list(stats.replicas) or [stats]


def load_entry(dp_rank: int, stats: SchedulerStats) -> LoadEntry:
    """SGLang counts the KV tokens in use, less cached prefixes that eviction could free, plus
    the tokens of the requests still waiting (they hold no pages yet but are load all the same)."""
    used_pages = stats.num_pages - stats.free_pages
    in_use = used_pages * stats.cache.page_size - stats.cache.evictable_tokens
    return LoadEntry(
        dp_rank=dp_rank,
        num_reqs=stats.running + stats.waiting,
        num_waiting_reqs=stats.waiting,
        num_tokens=max(in_use, 0) + stats.waiting_tokens,
    )


async def flush_cache(request: Request) -> Response:
    """GET or POST (SGLang takes both); SGLang's `{"empty_cache": ...}` body is not needed.
    The prompt logprobs the server kept go too: a flush empties every cache."""
    state = state_of(request)
    if await state.manager().flush_cache():
        state.prompt_logprobs.clear()
        return json_response(FlushCacheResponse(True, "the radix cache was flushed"))
    raise ApiError(400, "cannot flush the cache while requests are running", code="busy")


async def abort_request(request: Request) -> Response:
    state = state_of(request)
    body = await read_json(request, AbortRequest, state.config.max_body_bytes)
    tm = state.manager()
    if body.abort_all:
        rids = list(tm.queues)
        for rid in rids:
            await tm.abort(rid)
        return json_response(AbortResponse(True, f"abort sent to {len(rids)} request(s)"))
    if not body.rid:
        raise ApiError(400, "name the request to abort in `rid` (or send abort_all)", "rid")
    known = body.rid in tm.queues  # its finish is then abort(code=client): an answer, not an error
    await tm.abort(body.rid)
    message = "abort sent" if known else f"no request {body.rid!r} is in flight"
    return json_response(AbortResponse(known, message))


# --- what SGLang has and radixserve does not: a 501 that says what to do instead ----------------

NOT_IMPLEMENTED: dict[str, str] = {
    "/start_profile": (
        "radixserve has no built-in profiler; profile the scheduler process from outside "
        "(py-spy record --pid <scheduler pid>) or use benchmarks/bench_scheduler_overhead.py"
    ),
    "/stop_profile": "radixserve has no built-in profiler (see /start_profile)",
    "/concate_and_append_request": (
        "radixserve does not splice the KV caches of separate requests; send the joined text "
        "as the next prompt: its prefixes are already in the radix cache, so only the new "
        "tokens are computed (radixserve's frontend joins forks this way)"
    ),
}


async def not_implemented(request: Request) -> Response:
    path = request.url.path
    raise ApiError(501, f"{path} is not supported: {NOT_IMPLEMENTED[path]}", code="unsupported")
