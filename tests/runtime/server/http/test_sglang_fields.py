"""SGLang compatibility of the HTTP layer without a model: /generate bodies as sglang-router
and SGLang's clients send them, the neutral-value rule, the /get_load arithmetic, labelled
metrics starting at zero, chat messages without content, and pinned data-parallel routing."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from radixserve.radix_cache.base import CacheStats
from radixserve.runtime.server.dp_router import DataParallelRouter
from radixserve.runtime.server.http.errors import ApiError, decode_error
from radixserve.runtime.server.http.metrics import FINISH_REASONS, ServerMetrics
from radixserve.runtime.server.http.native import per_item
from radixserve.runtime.server.http.openai_chat import template_message
from radixserve.runtime.server.http.openai_protocol import ChatMessage, ToolCall, ToolCallFunction
from radixserve.runtime.server.http.operations import load_entry, per_replica
from radixserve.runtime.server.http.protocol import GenerateRequest
from radixserve.runtime.server.http.sglang_fields import (
    UNSUPPORTED,
    SGLangOnlyFields,
    is_neutral,
    refuse_unsupported,
    sglang_sampling,
)
from radixserve.runtime.wire.stats import SchedulerStats, StepStats

# What sglang-router 0.3.2 forwarded to a worker for {"text": ..., "sampling_params": ...}
# (recorded from the real router in front of a logging stand-in worker).
ROUTER_BODY: dict[str, Any] = {
    "text": "hello world",
    "model": None,
    "sampling_params": {"max_new_tokens": 1},
    "return_text_in_logprobs": False,
    "stream": False,
    "log_metrics": True,
    "return_hidden_states": False,
    "background": False,
    "no_logs": False,
    "return_bytes": False,
    "return_entropy": False,
}
# The fields of SGLang's GenerateReqInput (python/sglang/srt/managers/io_struct.py, current
# main), each with the value a client sends when it asks for nothing.
SGLANG_NEUTRAL: dict[str, Any] = {
    "rid": None,
    "session_id": "s-1",
    "text": "hi",
    "input_embeds": None,
    "image_data": None,
    "video_data": None,
    "audio_data": None,
    "mm_hashes": None,
    "mm_content_hashes": None,
    "use_audio_in_video": False,
    "video_config": None,
    "sampling_params": None,
    "return_logprob": None,
    "logprob_start_len": -1,
    "top_logprobs_num": 0,
    "token_ids_logprob": None,
    "return_sampling_mask": None,
    "return_text_in_logprobs": False,
    "return_flat_raw_top_logprobs": False,
    "return_flat_raw_top_logprobs_b64": False,
    "stream": False,
    "log_metrics": True,
    "return_hidden_states": False,
    "return_routed_experts": False,
    "routed_experts_start_len": 0,
    "return_indexer_topk": False,
    "modalities": None,
    "session_params": None,
    "lora_path": None,
    "lora_id": None,
    "custom_logit_processor": None,
    "positional_embed_overrides": None,
    "bootstrap_host": None,
    "bootstrap_port": None,
    "bootstrap_room": None,
    "bootstrap_pair_key": None,
    "decode_tp_size": None,
    "routed_dp_rank": None,
    "data_parallel_rank": None,
    "disagg_prefill_dp_rank": None,
    "kv_router_hint": None,
    "routing_key": None,
    "conversation_id": "c-1",
    "http_worker_ipc": None,
    "background": False,
    "require_reasoning": False,
    "max_thinking_tokens": None,
    "priority": None,
    "extra_key": None,
    "no_logs": True,
    "custom_labels": None,
    "return_bytes": False,
    "return_entropy": False,
    "return_prompt_token_ids": False,
    "external_trace_header": None,
    "received_time": None,
    "need_wait_for_mm_inputs": None,
    "num_items_assigned": None,
    "encoder_urls": None,
    "max_dynamic_patch": None,
    "min_dynamic_patch": None,
    "image_max_dynamic_patch": None,
    "video_max_dynamic_patch": None,
    "images_config": None,
    "multi_item_delimiter_indices": None,
    "cache_salt": None,
}


def decode(body: dict[str, Any]) -> GenerateRequest:
    return msgspec.json.decode(msgspec.json.encode(body), type=GenerateRequest)


def test_the_routers_body_and_every_sglang_field_at_its_neutral_value_are_accepted() -> None:
    refuse_unsupported(decode(ROUTER_BODY))
    body = decode(SGLANG_NEUTRAL)
    refuse_unsupported(body)
    assert body.session_id == "s-1" and body.no_logs is True
    # SGLang's null means "the default" for the per-prompt logprob fields.
    assert per_item(body.return_logprob, 2, "return_logprob", False) == [False, False]
    assert per_item(None, 1, "logprob_start_len", -1) == [-1]


def test_unsupported_fields_are_declared_once_with_neutral_defaults() -> None:
    declared = set(SGLangOnlyFields.__struct_fields__)
    assert declared == set(UNSUPPORTED)
    defaults = SGLangOnlyFields()
    assert all(is_neutral(getattr(defaults, name)) for name in declared)
    # Every SGLang field is either implemented by GenerateRequest or declared here.
    assert set(SGLANG_NEUTRAL) <= set(GenerateRequest.__struct_fields__)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("return_hidden_states", True),
        ("return_hidden_states", [False, True]),
        ("image_data", "data:image/png;base64," + "A" * 10_000),
        ("background", True),
        ("return_entropy", True),
        ("return_routed_experts", True),
        ("lora_path", "adapters/a"),
        ("priority", 3),
        ("custom_labels", {"team": "a"}),
        ("session_params", {"id": "s"}),
        ("token_ids_logprob", [1, 2]),
    ],
)
def test_a_value_that_asks_for_something_unsupported_is_a_400_naming_the_field(
    field: str, value: Any
) -> None:
    with pytest.raises(ApiError) as caught:
        refuse_unsupported(decode({"text": "hi", field: value}))
    error = caught.value
    assert (error.status, error.param, error.code) == (400, field, "unsupported")
    assert field in error.message and len(error.message) < 300  # huge values are cut short


@pytest.mark.parametrize(
    ("value", "neutral"),
    [
        (None, True),
        (False, True),
        (0, True),
        ("", True),
        ([], True),
        ({}, True),
        ([None, False], True),
        ({"a": None}, True),
        (True, False),
        (1, False),
        ("x", False),
        ([False, True], False),
        ({"a": "b"}, False),
    ],
)
def test_is_neutral(value: Any, neutral: bool) -> None:
    assert is_neutral(value) is neutral


def test_a_field_sglang_does_not_have_either_is_still_refused_by_name() -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        decode({"text": "hi", "bogus_field": 1})
    assert decode_error(caught.value).param == "bogus_field"
    with pytest.raises(msgspec.ValidationError) as caught:
        decode({"text": "hi", "sampling_params": [{"max_new_tokens": 1}], "logprob_start_len": "x"})
    assert decode_error(caught.value).param == "logprob_start_len"


def test_sglang_sampling_names_map_onto_ours() -> None:
    # What SGLang's frontend RuntimeEndpoint sends (SglSamplingParams.to_srt_kwargs + globals).
    frontend = {
        "skip_special_tokens": True,
        "spaces_between_special_tokens": True,
        "max_new_tokens": 8,
        "min_new_tokens": 0,
        "n": 1,
        "stop": [],
        "stop_token_ids": None,
        "stop_regex": None,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "ignore_eos": False,
        "regex": None,
        "json_schema": None,
    }
    params = sglang_sampling(frontend)
    assert params is not None and "stop_regex" not in params
    assert sglang_sampling({"sampling_seed": 7, "stream_interval": 1}) == {"seed": 7}
    assert sglang_sampling({"no_stop_trim": False, "custom_params": None}) == {}
    assert sglang_sampling(None) is None
    for bad in ({"stop_regex": "a+"}, {"no_stop_trim": True}, {"stream_interval": 4}):
        with pytest.raises(ApiError) as caught:
            sglang_sampling(bad)
        assert next(iter(bad)) in caught.value.message
        assert caught.value.param == "sampling_params"
    with pytest.raises(ApiError):
        sglang_sampling({"sampling_seed": 1, "seed": 2})


def stats(
    running: int, waiting: int, free_pages: int, evictable: int, waiting_tokens: int = 0
) -> SchedulerStats:
    cache = CacheStats(
        num_pages=100,
        page_size=16,
        free_pages=free_pages,
        cached_tokens=evictable,
        evictable_tokens=evictable,
        locked_tokens=0,
        hit_tokens=0,
        total_match_tokens=0,
        hit_rate=0.0,
        evicted_pages=0,
        num_nodes=1,
    )
    return SchedulerStats(
        running=running,
        waiting=waiting,
        waiting_tokens=waiting_tokens,
        num_pages=100,
        free_pages=free_pages,
        last_step=StepStats(),
        cache=cache,
    )


def test_load_counts_requests_and_the_kv_tokens_they_hold() -> None:
    # 40 pages used; 10 of them (160 tokens) are cached prefixes nobody holds: evictable.
    entry = load_entry(1, stats(running=3, waiting=2, free_pages=60, evictable=160))
    assert msgspec.to_builtins(entry) == {
        "dp_rank": 1,
        "num_reqs": 5,
        "num_waiting_reqs": 2,
        "num_tokens": 30 * 16,
    }
    idle = load_entry(0, stats(running=0, waiting=0, free_pages=90, evictable=160))
    assert idle.num_tokens == 0
    # A request that arrived and holds no pages yet is load all the same (SGLang's count too).
    queued = load_entry(
        0, stats(running=0, waiting=1, free_pages=90, evictable=160, waiting_tokens=7)
    )
    assert (queued.num_reqs, queued.num_tokens) == (1, 7)
    one = stats(0, 0, 100, 0)
    assert per_replica(one) == [one] and per_replica(None) == []
    merged = msgspec.structs.replace(one, replicas=[one, one])
    assert per_replica(merged) == [one, one]


def test_labelled_counters_exist_at_zero_before_any_request() -> None:
    samples = [
        s
        for family in text_string_to_metric_families(ServerMetrics().render().decode())
        for s in family.samples
        if s.name == "radixserve_requests_total"
    ]
    assert {s.labels["finish_reason"] for s in samples} == set(FINISH_REASONS)
    assert set(FINISH_REASONS) == {"stop", "length", "abort"}
    assert all(s.value == 0 for s in samples)


def test_only_an_assistant_message_with_tool_calls_may_leave_out_content() -> None:
    for role in ("user", "system", "tool", "assistant"):
        with pytest.raises(ApiError) as caught:
            template_message(2, ChatMessage(role=role))
        assert caught.value.status == 400
        assert caught.value.param == "messages[2].content"
    call = ToolCall(id="call_1", function=ToolCallFunction(name="f", arguments="{}"))
    message = template_message(0, ChatMessage(role="assistant", tool_calls=[call]))
    assert message["content"] == "" and message["tool_calls"][0]["id"] == "call_1"
    assert template_message(0, ChatMessage(role="user", content=""))["content"] == ""


def test_a_pinned_request_goes_to_the_named_replica_and_counts_there() -> None:
    router = DataParallelRouter(2, "cache_aware", num_pages=64, page_size=4)
    prompt = list(range(32))
    home = router.route(prompt).replica
    router.finished(home)
    decision = router.route(prompt, 1 - home)  # the cache says `home`; the client says other
    assert (decision.replica, decision.reason) == (1 - home, "pinned")
    assert router.in_flight[1 - home] == 1
