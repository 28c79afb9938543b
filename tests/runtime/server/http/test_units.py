"""Pure parts of the HTTP layer: SSE framing, stream merging, error shapes, protocol decoding,
token texts and logprob formats, and the metrics collector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from radixserve.radix_cache.base import CacheStats
from radixserve.runtime.server.http.errors import ApiError, decode_error
from radixserve.runtime.server.http.generation import ABORT_ERRORS, abort_error
from radixserve.runtime.server.http.metrics import ServerMetrics
from radixserve.runtime.server.http.openai_logprobs import (
    chat_logprobs,
    completion_logprobs,
    output_entries,
    prompt_entries,
)
from radixserve.runtime.server.http.openai_protocol import ChatCompletionRequest, CompletionRequest
from radixserve.runtime.server.http.sse import DONE, merge, sse_event
from radixserve.runtime.server.http.token_text import TokenTexts
from radixserve.runtime.server.output import RequestOutputBuilder
from radixserve.runtime.wire.messages import AbortCode, FinishReason, GenerateReq, TokenOut
from radixserve.runtime.wire.sampling_params import SamplingParams
from radixserve.runtime.wire.stats import SchedulerStats, StepStats
from tests.runtime.smollm2 import smollm2_tokenizer


def test_sse_framing() -> None:
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"


async def _items(values: list[int], delay: float) -> AsyncIterator[int]:
    for v in values:
        await asyncio.sleep(delay)
        yield v


def test_merge_interleaves_and_cancels_on_early_exit() -> None:
    closed: list[str] = []

    async def endless() -> AsyncIterator[int]:
        try:
            while True:
                await asyncio.sleep(0.001)
                yield 0
        finally:
            closed.append("endless")

    async def scenario() -> None:
        got = [x async for x in merge([_items([1, 2], 0.001), _items([3], 0.002)])]
        assert sorted(got) == [(0, 1), (0, 2), (1, 3)]
        stream = merge([endless(), _items([5], 0.0)])
        async for _ in stream:
            break
        await stream.aclose()
        await asyncio.sleep(0.01)
        assert closed == ["endless"]  # leaving early cancelled (would abort) the other stream

    asyncio.run(scenario())


def test_merge_raises_a_stream_error() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ApiError(400, "refused")

    async def scenario() -> None:
        with pytest.raises(ApiError, match="refused"):
            async for _ in merge([failing(), _items([1, 2, 3], 0.01)]):
                pass

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"prompt": "x", "temperature": -1}', "temperature"),
        (b'{"prompt": "x", "top_p": 0}', "top_p"),
        (b'{"prompt": "x", "max_tokens": "3"}', "max_tokens"),
        (b'{"max_tokens": 3}', "prompt"),
    ],
)
def test_decode_errors_name_the_field(body: bytes, param: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(body, type=CompletionRequest)
    error = decode_error(info.value)
    assert error.status == 400 and error.param == param and param in error.message


def test_bad_json_and_error_body_shape() -> None:
    with pytest.raises(msgspec.DecodeError) as info:
        msgspec.json.decode(b"{", type=CompletionRequest)
    error = decode_error(info.value)
    body = msgspec.json.decode(error.response().body)
    assert body["error"]["code"] == "bad_json" and set(body["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_finish_codes_map_to_http_statuses_not_message_texts() -> None:
    def status(finish: FinishReason) -> int | None:
        error = abort_error(finish)
        return None if error is None else error.status

    # The message text plays no part: an "internal error" text with a client code is an answer.
    assert status(FinishReason.abort(AbortCode.CLIENT, "internal error: looks scary")) is None
    assert status(FinishReason.abort(AbortCode.GRAMMAR, "the grammar rejected 5")) is None
    assert status(FinishReason.abort(AbortCode.REJECTED, "the prompt is empty")) == 400
    assert status(FinishReason.abort(AbortCode.INTERNAL, "a step failed")) == 500
    assert status(FinishReason.abort(AbortCode.SHUTDOWN, "shutting down")) == 503
    assert status(FinishReason("stop", matched="x")) is None
    assert status(FinishReason("length")) is None
    error = abort_error(FinishReason.abort(AbortCode.REJECTED, "too long for the pool"))
    assert error is not None
    assert msgspec.to_builtins(error.payload()) == {
        "error": {
            "message": "too long for the pool",
            "type": "invalid_request_error",
            "param": None,
            "code": "rejected",
        }
    }
    # Every code is either an answer or has its status.
    assert set(AbortCode) == set(ABORT_ERRORS) | {AbortCode.CLIENT, AbortCode.GRAMMAR}


def test_chat_request_roles_and_defaults() -> None:
    req = msgspec.json.decode(
        b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}',
        type=ChatCompletionRequest,
    )
    assert req.n == 1 and req.max_tokens is None and req.temperature == 1.0
    with pytest.raises(msgspec.ValidationError, match="role"):
        msgspec.json.decode(b'{"messages": [{"role": "x"}]}', type=ChatCompletionRequest)


def test_token_texts_recover_bytes_of_split_characters() -> None:
    tokenizer = smollm2_tokenizer()
    texts = TokenTexts(tokenizer)
    text = "héllo 世界 ok"
    ids = tokenizer.encode(text)
    assert b"".join(texts.bytes(t) for t in ids) == text.encode()
    assert texts.text(ids[0]) == "h"
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert texts.text(eos) == "<|im_end|>"


def _finished_output() -> RequestOutputBuilder:
    req = GenerateReq(
        rid="r",
        input_ids=[504, 3575],
        sampling=SamplingParams(max_new_tokens=2),
        return_logprob=True,
        logprob_start_len=0,
        top_logprobs_num=2,
    )
    output = RequestOutputBuilder(req)
    first = TokenOut(
        rid="r",
        new_token_ids=[282],
        prompt_tokens=2,
        cached_tokens=0,
        completion_tokens=1,
        output_logprobs=[-0.5],
        output_top_logprobs=[[(282, -0.5), (30, -1.5)]],
        input_logprobs=[None, -2.0],
        input_top_logprobs=[None, [(3575, -2.0), (30, -2.5)]],
    )
    last = TokenOut(
        rid="r",
        new_token_ids=[4649],
        prompt_tokens=2,
        cached_tokens=0,
        completion_tokens=2,
        finish=FinishReason("length"),
        output_logprobs=[-0.25],
        output_top_logprobs=[[(4649, -0.25), (30, -3.0)]],
    )
    output.add(" of", first)
    output.add(" France", last)
    return output


def test_completion_and_chat_logprob_formats() -> None:
    texts = TokenTexts(smollm2_tokenizer())
    output = _finished_output()
    entries = prompt_entries(output) + output_entries(output)
    lps = completion_logprobs(texts, entries)
    assert lps.tokens == ["The", " capital", " of", " France"]
    assert lps.token_logprobs == [None, -2.0, -0.5, -0.25]
    assert lps.top_logprobs[0] is None and lps.top_logprobs[2] == {" of": -0.5, ".": -1.5}
    assert lps.text_offset == [0, 3, 11, 14]
    chat = chat_logprobs(texts, output_entries(output, start=1))
    assert [c.token for c in chat.content] == [" France"]
    assert chat.content[0].bytes == list(b" France") and len(chat.content[0].top_logprobs) == 2


def test_metrics_render_and_scheduler_collector() -> None:
    metrics = ServerMetrics()
    timer = metrics.timer()
    timer.tokens(1)
    timer.tokens(2)
    timer.finish("stop", prompt_tokens=10, cached_tokens=4)
    cache = CacheStats(
        num_pages=10,
        page_size=16,
        free_pages=4,
        cached_tokens=0,
        evictable_tokens=0,
        locked_tokens=0,
        hit_tokens=0,
        total_match_tokens=0,
        hit_rate=0.0,
        evicted_pages=5,
        num_nodes=1,
    )
    metrics.scheduler.stats = SchedulerStats(
        running=3,
        waiting=1,
        num_pages=10,
        free_pages=4,
        prompt_tokens=100,
        cache_hit_tokens=25,
        decode_tokens=7,
        retractions=1,
        last_step=StepStats(),
        cache=cache,
    )
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples["radixserve_time_to_first_token_seconds_count"] == 1
    assert samples["radixserve_inter_token_latency_seconds_count"] == 2
    assert samples["radixserve_generation_tokens_total"] == 3
    assert samples["radixserve_num_running_reqs"] == 3
    assert samples["radixserve_kv_usage"] == pytest.approx(0.6)
    assert samples["radixserve_cache_hit_rate"] == pytest.approx(0.25)
    assert samples["radixserve_evictions_total"] == 5
    assert samples["radixserve_retractions_total"] == 1
