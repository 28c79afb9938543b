"""Request and response types of the native (SGLang-shaped) API."""

from __future__ import annotations

from typing import Any

import msgspec

from ...wire.messages import RuntimeInfo
from ...wire.stats import SchedulerStats


class GenerateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /generate. One prompt or a batch: `text` (str or list of str) or `input_ids` (list of
    ints or list of lists). Per-prompt fields may be lists matching the batch."""

    text: str | list[str] | None = None
    input_ids: list[Any] | None = None  # list[int] | list[list[int]]: checked by hand
    sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None
    stream: bool = False
    return_logprob: bool | list[bool] = False
    logprob_start_len: int | list[int] = -1
    top_logprobs_num: int | list[int] = 0
    return_text_in_logprobs: bool = False
    rid: str | list[str] | None = None


class GenerateResponse(msgspec.Struct, omit_defaults=True):
    text: str
    output_ids: list[int]
    meta_info: dict[str, Any]
    index: int | None = None  # position in the batch, on streamed chunks of a batch


class AbortRequest(msgspec.Struct, forbid_unknown_fields=True):
    rid: str


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


class ServerInfo(msgspec.Struct):
    server_args: dict[str, Any]
    runtime: RuntimeInfo
    http: dict[str, Any]
    scheduler: SchedulerStats | None  # None: the runtime is down, or never answered
    healthy: bool
