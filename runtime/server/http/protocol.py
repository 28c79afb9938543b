"""Request and response types of the native (SGLang-shaped) API."""

from __future__ import annotations

from typing import Any

import msgspec

from ...wire.messages import RuntimeInfo
from ...wire.stats import SchedulerStats
from .sglang_fields import SGLangOnlyFields


class GenerateRequest(SGLangOnlyFields, kw_only=True, forbid_unknown_fields=True):
    """POST /generate. One prompt or a batch: `text` (str or list of str) or `input_ids` (list of
    ints or list of lists). Per-prompt fields may be lists matching the batch. SGLang's fields
    radixserve does not implement come from `SGLangOnlyFields` (neutral values only); a field
    SGLang does not have either is refused by name."""

    text: str | list[str] | None = None
    input_ids: list[Any] | None = None  # list[int] | list[list[int]]: checked by hand
    sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None
    stream: bool = False
    # null (SGLang's default) means the default here too
    return_logprob: bool | list[bool] | None = False
    logprob_start_len: int | list[int] | None = -1
    top_logprobs_num: int | list[int] | None = 0
    return_text_in_logprobs: bool = False
    rid: str | list[str] | None = None
    model: str | None = None  # checked against the served model (sglang-router sends null)
    log_metrics: bool = True  # false: the request is left out of /metrics (health probes)
    no_logs: bool = False  # honoured as is: radixserve never logs prompts or outputs
    # Pins the request to one --dp-size replica (sglang-router's --dp-aware mode sends the
    # first spelling; SGLang's current name is the second).
    data_parallel_rank: int | None = None
    routed_dp_rank: int | None = None
    session_id: str | None = None  # bookkeeping ids: accepted, they change nothing
    conversation_id: str | None = None


class GenerateResponse(msgspec.Struct, omit_defaults=True):
    text: str
    output_ids: list[int]
    meta_info: dict[str, Any]
    index: int | None = None  # position in the batch, on streamed chunks of a batch


class AbortRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    rid: str = ""
    abort_all: bool = False  # SGLang's: every request in flight


class AbortResponse(msgspec.Struct):
    success: bool
    message: str


class FlushCacheResponse(msgspec.Struct):
    success: bool
    message: str


class HealthResponse(msgspec.Struct, omit_defaults=True):
    status: str
    error: str | None = None


class ModelInfo(msgspec.Struct):
    model_path: str
    tokenizer_path: str
    is_generation: bool = True
    served_model_name: str = ""
    # For clients that build chat prompts themselves (the DSL's role blocks).
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    # SGLang's: what the server would like clients to sample with, and which weights it runs.
    preferred_sampling_params: dict[str, Any] | None = None
    weight_version: str = "default"


class ServerInfo(msgspec.Struct):
    server_args: dict[str, Any]
    runtime: RuntimeInfo
    http: dict[str, Any]
    scheduler: SchedulerStats | None  # None: the runtime is down, or never answered
    healthy: bool


class SGLangServerInfo(msgspec.Struct, kw_only=True):
    """GET /server_info: SGLang's flat shape. These fields go on top of every server argument
    (API key masked); the server arguments' own `model_path` and `served_model_name` may be
    unset, so the resolved ones replace them."""

    model_path: str
    tokenizer_path: str
    served_model_name: str
    version: str
    context_length: int  # tokens per request at most (the model's or --context-length)
    max_total_num_tokens: int  # the KV pool, per replica
    max_req_input_len: int
    vocab_size: int
    healthy: bool
    internal_states: list[SchedulerStats]  # one per data-parallel replica (empty when down)


class LoadEntry(msgspec.Struct):
    """GET /get_load: one per data-parallel replica, in SGLang's shape."""

    dp_rank: int
    num_reqs: int  # running + waiting
    num_waiting_reqs: int
    # KV tokens held by requests (cached prefixes nobody uses are free to evict) plus those the
    # waiting requests still need.
    num_tokens: int
