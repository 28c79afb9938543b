"""How bench_serving sends one request to each kind of server, streaming, and times it.

    backend                          API                          what it reads back
    sglang, radixserve               POST /generate (SSE)         meta_info: prompt, completion
                                                                  and cached tokens
    sglang-oai, vllm, openai,        POST /v1/completions (SSE)   usage (stream_options.
    llama.cpp, lmdeploy, trt                                      include_usage): prompt,
                                                                  completion, cached tokens
    sglang-oai-chat, vllm-chat,      POST /v1/chat/completions    the same, from chat chunks
    openai-chat

Every backend streams: the time to the first chunk with text is the TTFT and the gaps between
later chunks are inter-token latencies (a chunk may carry several tokens, as in SGLang's
benchmark). A server that does not report token counts has the output counted with the
benchmark's tokenizer and `cached_tokens` left at 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.serving_datasets import ServingRequest

NATIVE = ("sglang", "radixserve")
COMPLETIONS = ("sglang-oai", "vllm", "openai", "llama.cpp", "lmdeploy", "trt")
CHAT = ("sglang-oai-chat", "vllm-chat", "openai-chat")
BACKENDS = NATIVE + COMPLETIONS + CHAT


@dataclass(slots=True)
class RequestResult:
    success: bool = False
    error: str = ""
    prompt_len: int = 0  # the server's count when it reports one, else the benchmark's
    output_len: int = 0
    cached_tokens: int = 0
    generated_text: str = ""
    ttft: float = 0.0  # seconds from sending to the first chunk with text
    itl: list[float] = field(default_factory=list)  # gaps between later chunks
    latency: float = 0.0  # end to end
    start: float = 0.0  # perf_counter at sending


@dataclass(slots=True, frozen=True)
class RequestSettings:
    model: str
    ignore_eos: bool = True
    tokenize_prompt: bool = False  # send token ids (native and completions backends)
    extra_body: dict[str, Any] = field(default_factory=dict)


def request_body(backend: str, req: ServingRequest, s: RequestSettings) -> tuple[str, dict]:
    """The path and JSON body of one greedy streaming request."""
    prompt: str | list[int] = req.prompt_ids if s.tokenize_prompt else req.prompt
    if backend in NATIVE:
        sampling = {
            "temperature": 0.0,
            "max_new_tokens": req.output_len,
            "ignore_eos": s.ignore_eos,
            **s.extra_body,
        }
        key = "input_ids" if s.tokenize_prompt else "text"
        return "/generate", {key: prompt, "sampling_params": sampling, "stream": True}
    common = {
        "model": s.model,
        "temperature": 0.0,
        "max_tokens": req.output_len,
        "stream": True,
        "stream_options": {"include_usage": True},
        **({"ignore_eos": True} if s.ignore_eos else {}),
        **s.extra_body,
    }
    if backend in CHAT:
        return "/v1/chat/completions", {**common, "messages": req.messages}
    return "/v1/completions", {**common, "prompt": prompt}


async def sse_events(response: httpx.Response) -> AsyncIterator[dict]:
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def chunk_text(backend: str, event: dict, text_so_far: str) -> str:
    """The new text in one event (the native API sends the whole text so far)."""
    if backend in NATIVE:
        return event.get("text", "")[len(text_so_far) :]
    choices = event.get("choices") or []
    if not choices:
        return ""
    if backend in CHAT:
        return (choices[0].get("delta") or {}).get("content") or ""
    return choices[0].get("text") or ""


def read_counts(backend: str, event: dict, result: RequestResult) -> None:
    """Token counts the server reports (the native meta_info or an OpenAI usage chunk)."""
    usage = event.get("meta_info") if backend in NATIVE else event.get("usage")
    if not usage:
        return
    result.prompt_len = usage.get("prompt_tokens", result.prompt_len)
    result.output_len = usage.get("completion_tokens", result.output_len)
    cached = usage.get("cached_tokens")
    if cached is None:  # OpenAI's place for it
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    result.cached_tokens = int(cached or 0)


async def send_request(
    client: httpx.AsyncClient, backend: str, req: ServingRequest, settings: RequestSettings
) -> RequestResult:
    path, body = request_body(backend, req, settings)
    result = RequestResult(prompt_len=req.prompt_len)
    result.start = start = last = time.perf_counter()
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}: {response.text[:300]}"
                return result
            async for event in sse_events(response):
                if "error" in event:
                    result.error = json.dumps(event["error"])[:300]
                    return result
                text = chunk_text(backend, event, result.generated_text)
                read_counts(backend, event, result)
                if not text:
                    continue
                now = time.perf_counter()
                if not result.generated_text:
                    result.ttft = now - start
                else:
                    result.itl.append(now - last)
                last = now
                result.generated_text += text
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    result.latency = time.perf_counter() - start
    result.success = True
    return result
