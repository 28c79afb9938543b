"""Every message between radixserve's processes, as msgspec Structs.

Messages travel as tagged unions: a socket decodes with `msgspec.msgpack.Decoder(UnionType)` and
the tag picks the class, so no code ever looks a class up by name.

    tokenizer side --GenerateReq/AbortReq/FlushCacheReq--> scheduler
    scheduler      --TokenBatchOut----------------------> detokenizer
    detokenizer    --TextOut----------------------------> tokenizer side
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .sampling_params import SamplingParams

TopLogprobs = list[tuple[int, float]]


class FinishReason(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["stop", "length", "abort"]
    matched: int | str | None = None  # the stop token id or stop string that ended it
    message: str | None = None  # why an abort happened

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type}
        if self.type != "abort" or self.matched is not None:
            out["matched"] = self.matched
        if self.message is not None:
            out["message"] = self.message
        return out


# --- tokenizer side -> scheduler -------------------------------------------------------------


class GenerateReq(msgspec.Struct, tag=True, kw_only=True):
    rid: str
    input_ids: list[int]
    sampling: SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1  # prompt logprobs from this position; -1 = none
    top_logprobs_num: int = 0
    stream: bool = False


class AbortReq(msgspec.Struct, tag=True):
    rid: str


class FlushCacheReq(msgspec.Struct, tag=True):
    pass


class GetStatsReq(msgspec.Struct, tag=True):
    pass


class ShutdownReq(msgspec.Struct, tag=True):
    pass


SchedulerInput = GenerateReq | AbortReq | FlushCacheReq | GetStatsReq | ShutdownReq


# --- scheduler -> detokenizer -> tokenizer side ------------------------------------------------


class DetokenizeSpec(msgspec.Struct, frozen=True):
    """How the detokenizer treats a request; sent with the request's first output."""

    stop: list[str] = []
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True


class TokenOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one request gained in one scheduler step."""

    rid: str
    spec: DetokenizeSpec | None = None  # on the first output of each request
    new_token_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish: FinishReason | None = None
    output_logprobs: list[float] = []  # one per new token, when asked
    output_top_logprobs: list[TopLogprobs] = []
    input_logprobs: list[float | None] = []  # prompt logprobs, sent once with the first output
    input_top_logprobs: list[TopLogprobs | None] = []


class TokenBatchOut(msgspec.Struct, tag=True):
    outputs: list[TokenOut]


class TextOut(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Detokenized increment of one request, sent to the tokenizer side."""

    rid: str
    text_delta: str
    token_out: TokenOut


class ControlOut(msgspec.Struct, tag=True, kw_only=True):
    """Reply to a control request (flush, stats)."""

    kind: str
    ok: bool = True
    payload: dict[str, object] = {}
    dp_rank: int = 0  # which data-parallel replica answers


class ReadyOut(msgspec.Struct, tag=True, kw_only=True):
    """A process's start-up report: ready, or the error that stopped it."""

    process: str
    ok: bool
    error: str = ""
    info: dict[str, object] = {}


SchedulerOutput = TokenBatchOut | ControlOut | ReadyOut
DetokenizerOutput = TextOut | ControlOut | ReadyOut
