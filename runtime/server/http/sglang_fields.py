"""SGLang's /generate fields that radixserve does not implement, accepted at their neutral values.

SGLang's `GenerateReqInput` has many more fields than radixserve's native API, and clients built
for SGLang send them: sglang-router re-serializes every /generate body with `log_metrics: true,
return_hidden_states: false, background: false, no_logs: false, return_bytes: false,
return_entropy: false` filled in. A field listed here is accepted when its value asks for
nothing (`is_neutral`: unset, false, zero, empty, or a per-prompt list of those) and refused
with a 400 naming it otherwise, so a request never silently loses what it asked for.

SGLang's sampling parameters get the same treatment (`sglang_sampling`): `sampling_seed` is
radixserve's `seed`, and the few radixserve lacks are dropped at their neutral values.

The fields radixserve honours are declared on `GenerateRequest` itself (protocol.py): the
prompt, sampling and logprob fields, `stream`, `rid`, `model`, `log_metrics`, `no_logs`,
`data_parallel_rank` / `routed_dp_rank`, and the bookkeeping ids `session_id` and
`conversation_id` (radixserve keeps no per-session state, so they change nothing).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import ApiError

MULTIMODAL = "radixserve serves text-only models; send `text` or `input_ids`"
PD = "prefill/decode disaggregation is not supported: run whole servers behind sglang-router"
LORA = "LoRA adapters are not supported"
NO_SESSIONS = "radixserve keeps no server-side sessions; the radix cache reuses the shared prefix"
NOT_COMPUTED = "radixserve does not compute it"
SHOWN_CHARS = 60  # of a refused value in the error message (image data can be megabytes)

# Field -> why a non-neutral value cannot be honoured. Every field of SGLang's GenerateReqInput
# that radixserve does not implement; declared with a neutral default on `SGLangOnlyFields`.
UNSUPPORTED: dict[str, str] = {
    "input_embeds": MULTIMODAL,
    "image_data": MULTIMODAL,
    "video_data": MULTIMODAL,
    "audio_data": MULTIMODAL,
    "modalities": MULTIMODAL,
    "mm_hashes": MULTIMODAL,
    "mm_content_hashes": MULTIMODAL,
    "use_audio_in_video": MULTIMODAL,
    "video_config": MULTIMODAL,
    "max_dynamic_patch": MULTIMODAL,
    "min_dynamic_patch": MULTIMODAL,
    "image_max_dynamic_patch": MULTIMODAL,
    "video_max_dynamic_patch": MULTIMODAL,
    "images_config": MULTIMODAL,
    "need_wait_for_mm_inputs": MULTIMODAL,
    "num_items_assigned": MULTIMODAL,
    "encoder_urls": MULTIMODAL,
    "positional_embed_overrides": "embedding overrides are not supported",
    "token_ids_logprob": "logprobs of chosen token ids are not supported; use top_logprobs_num",
    "return_sampling_mask": NOT_COMPUTED,
    "return_flat_raw_top_logprobs": "logprobs come as (logprob, token_id, text) triples only",
    "return_flat_raw_top_logprobs_b64": "logprobs come as (logprob, token_id, text) triples only",
    "return_prompt_token_ids": "send `input_ids` to know the prompt's token ids",
    "return_hidden_states": "hidden states are not returned",
    "return_routed_experts": "radixserve runs dense models (no mixture-of-experts routing)",
    "routed_experts_start_len": "radixserve runs dense models (no mixture-of-experts routing)",
    "return_indexer_topk": NOT_COMPUTED,
    "return_entropy": NOT_COMPUTED,
    "return_bytes": "radixserve generates text, not images",
    "session_params": NO_SESSIONS,
    "lora_path": LORA,
    "lora_id": LORA,
    "custom_logit_processor": "custom logit processors are not supported; use logit_bias",
    "bootstrap_host": PD,
    "bootstrap_port": PD,
    "bootstrap_room": PD,
    "bootstrap_pair_key": PD,
    "decode_tp_size": PD,
    "disagg_prefill_dp_rank": PD,
    "kv_router_hint": "no hierarchical KV storage backend",
    "routing_key": "no routing-key scheduling policy",
    "priority": "no priority scheduling",
    "extra_key": "no cache namespaces: every request shares the one radix cache",
    "cache_salt": "no cache namespaces: every request shares the one radix cache",
    "background": "no background (detached) requests",
    "require_reasoning": "no hybrid-reasoning control",
    "max_thinking_tokens": "no hybrid-reasoning control",
    "custom_labels": "no custom metric labels",
    "external_trace_header": "no request tracing",
    "received_time": "latencies are measured from the request's arrival here",
    "multi_item_delimiter_indices": "no multi-item scoring",
    "http_worker_ipc": "an SGLang-internal field",
}


class SGLangOnlyFields(msgspec.Struct, kw_only=True):
    """SGLang's fields from UNSUPPORTED, each at its neutral default (any JSON is decoded: a
    value's meaning, not its type, decides whether it can be honoured)."""

    input_embeds: object = None
    image_data: object = None
    video_data: object = None
    audio_data: object = None
    modalities: object = None
    mm_hashes: object = None
    mm_content_hashes: object = None
    use_audio_in_video: object = False
    video_config: object = None
    max_dynamic_patch: object = None
    min_dynamic_patch: object = None
    image_max_dynamic_patch: object = None
    video_max_dynamic_patch: object = None
    images_config: object = None
    need_wait_for_mm_inputs: object = None
    num_items_assigned: object = None
    encoder_urls: object = None
    positional_embed_overrides: object = None
    token_ids_logprob: object = None
    return_sampling_mask: object = None
    return_flat_raw_top_logprobs: object = False
    return_flat_raw_top_logprobs_b64: object = False
    return_prompt_token_ids: object = False
    return_hidden_states: object = False
    return_routed_experts: object = False
    routed_experts_start_len: object = 0
    return_indexer_topk: object = False
    return_entropy: object = False
    return_bytes: object = False
    session_params: object = None
    lora_path: object = None
    lora_id: object = None
    custom_logit_processor: object = None
    bootstrap_host: object = None
    bootstrap_port: object = None
    bootstrap_room: object = None
    bootstrap_pair_key: object = None
    decode_tp_size: object = None
    disagg_prefill_dp_rank: object = None
    kv_router_hint: object = None
    routing_key: object = None
    priority: object = None
    extra_key: object = None
    cache_salt: object = None
    background: object = False
    require_reasoning: object = False
    max_thinking_tokens: object = None
    custom_labels: object = None
    external_trace_header: object = None
    received_time: object = None
    multi_item_delimiter_indices: object = None
    http_worker_ipc: object = None


def is_neutral(value: object) -> bool:
    """Asks for nothing: unset, false, zero, empty, or a (per-prompt) list of such values."""
    if value is None or value is False or value == 0 or value == "":
        return True
    if isinstance(value, (list, dict)):
        items = value if isinstance(value, list) else list(value.values())
        return all(is_neutral(item) for item in items)
    return False


def refuse_unsupported(body: SGLangOnlyFields) -> None:
    """A 400 naming the first SGLang-only field whose value asks for something."""
    for name, why in UNSUPPORTED.items():
        value = getattr(body, name)
        if not is_neutral(value):
            shown = repr(value)
            shown = shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + "..."
            raise ApiError(
                400, f"`{name}` = {shown} is not supported: {why}", name, code="unsupported"
            )


# SGLang's sampling parameters that radixserve's SamplingParams lacks: name -> (values besides
# the neutral ones that ask for what radixserve does anyway, why others cannot be honoured).
SAMPLING_UNSUPPORTED: dict[str, tuple[tuple[object, ...], str]] = {
    "stop_regex": ((), "stop on strings (`stop`) or token ids (`stop_token_ids`) instead"),
    "no_stop_trim": ((), "a matched stop string is always trimmed from the text"),
    "custom_params": ((), "custom logit processors are not supported; use logit_bias"),
    "structural_tag": ((), "use json_schema, regex or ebnf"),
    "stream_interval": ((1,), "a stream sends the new tokens of every step"),
    "beam_width": ((1,), "beam search is not supported"),
}
SAMPLING_RENAMED = {"sampling_seed": "seed"}  # SGLang's name -> radixserve's


def sglang_sampling(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Sampling parameters in SGLang's names, as radixserve's SamplingParams takes them; a
    value that cannot be honoured is a 400 naming it. Other names pass on to be checked."""
    if raw is None:
        return None
    params = dict(raw)
    for name, ours in SAMPLING_RENAMED.items():
        value = params.pop(name, None)
        if value is None:
            continue
        if params.get(ours) not in (None, value):
            raise ApiError(
                400, f"sampling_params set both `{name}` and `{ours}`", "sampling_params"
            )
        params[ours] = value
    for name, (also_neutral, why) in SAMPLING_UNSUPPORTED.items():
        value = params.pop(name, None)
        if not (is_neutral(value) or value in also_neutral):
            raise ApiError(
                400,
                f"sampling_params `{name}` = {value!r} is not supported: {why}",
                "sampling_params",
                code="unsupported",
            )
    return params
