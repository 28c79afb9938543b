"""Every message between radixserve's processes, as msgspec Structs.

Messages travel as tagged unions: a socket decodes with `msgspec.msgpack.Decoder(UnionType)` and
the tag picks the class, so no code ever looks a class up by name.

    tokenizer side --GenerateReq/AbortReq/FinishReq/FlushCacheReq/GetTreeReq--> scheduler
    scheduler      --TokenBatchOut--------------------------------> detokenizer
    detokenizer    --TextOut--------------------------------------> tokenizer side

A request's end is data, not a message text: `FinishReason.type` says how it ended and, for an
abort, `FinishReason.code` says why (`AbortCode`); the server maps the code to an HTTP status.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

from ...radix_cache.base import CacheStats
from .sampling_params import SamplingParams
from .stats import SchedulerStats

TopLogprobs = list[tuple[int, float]]


class AbortCode(enum.StrEnum):
    """Why a request was aborted; the server answers each with its own HTTP status."""

    CLIENT = "client"  # the caller asked: /abort_request, a disconnect, a closed stream (200)
    REJECTED = "rejected"  # the scheduler refused it: bad grammar, too long for the pool... (400)
    GRAMMAR = "grammar"  # the output could not continue under its grammar (200, partial output)
    INTERNAL = "internal"  # a scheduler step failed (500)
    SHUTDOWN = "shutdown"  # the runtime shut down under it (503)


class FinishReason(msgspec.Struct, frozen=True, omit_defaults=True):
    type: Literal["stop", "length", "abort"]
    matched: int | str | None = None  # the stop token id or stop string that ended it
    message: str | None = None  # why an abort happened, for people
    code: AbortCode | None = None  # why an abort happened, for code (set on every abort)
    # Decided after the scheduler (by the detokenizer: a stop string, a failure to decode), so
    # the scheduler has to be told (`FinishReq`, or `Scheduler.finish_externally` in process).
    external: bool = False

    @classmethod
    def abort(cls, code: AbortCode, message: str) -> FinishReason:
        return cls("abort", message=message, code=code)

    @property
    def is_stop_string(self) -> bool:
        return self.type == "stop" and isinstance(self.matched, str)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type}
        if self.type != "abort" or self.matched is not None:
            out["matched"] = self.matched
        if self.message is not None:
            out["message"] = self.message
        if self.code is not None:
            out["code"] = self.code.value
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
    """The caller gave up on the request (code `client`)."""

    rid: str


class FinishReq(msgspec.Struct, tag=True):
    """The request ended outside the scheduler (the detokenizer matched a stop string): the
    scheduler frees it and counts it finished, not aborted."""

    rid: str
    finish: FinishReason


class FlushCacheReq(msgspec.Struct, tag=True):
    pass


class GetStatsReq(msgspec.Struct, tag=True):
    pass


class GetTreeReq(msgspec.Struct, tag=True, kw_only=True):
    """One page of the prefix cache's nodes (`/debug/radix_tree`): `limit` nodes from the
    `offset`-th in the tree's walk order, each with its first `token_preview` token ids."""

    offset: int = 0
    limit: int
    token_preview: int = 0


class ShutdownReq(msgspec.Struct, tag=True):
    pass


SchedulerInput = (
    GenerateReq | AbortReq | FinishReq | FlushCacheReq | GetStatsReq | GetTreeReq | ShutdownReq
)


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


class FlushCacheOut(msgspec.Struct, tag=True, kw_only=True):
    """A scheduler's answer to FlushCacheReq: refused (False) while requests run."""

    ok: bool
    dp_rank: int = 0  # which data-parallel replica answers


class StatsOut(msgspec.Struct, tag=True, kw_only=True):
    """A scheduler's answer to GetStatsReq."""

    stats: SchedulerStats
    dp_rank: int = 0


class CacheNodeView(msgspec.Struct, frozen=True, kw_only=True):
    """One node of the radix tree as `/debug/radix_tree` shows it."""

    id: int
    parent: int | None  # None for the root
    depth: int  # edges from the root (the root is 0)
    num_tokens: int  # the edge's tokens (a multiple of the page size)
    num_pages: int
    lock_ref: int  # running requests whose locked path runs through this node
    last_access: int  # the cache clock (one tick per match or insert) at the last access
    hits: int  # matches that passed through this node
    num_children: int
    key_head: list[int] = []  # the edge's first token ids (GetTreeReq.token_preview)
    tier: str | None = None  # where the node's KV lives, for a cache with tiers


class TreeOut(msgspec.Struct, tag=True, kw_only=True):
    """A scheduler's answer to GetTreeReq: one page of its cache's nodes, parents before
    children (a node's parent may be on an earlier page), and the cache's counters."""

    kind: str  # the prefix cache: radix, block_hash, naive
    policy: str  # its eviction order
    page_size: int
    num_pages: int
    clock: int  # the cache clock now, against which last_access ages
    total_nodes: int  # nodes in the whole tree, root included
    offset: int
    nodes: list[CacheNodeView]  # empty for a cache that is not a tree
    stats: CacheStats
    running: int  # requests running in the scheduler now
    waiting: int
    dp_rank: int = 0


# Answers to control requests, passed on by the detokenizer.
ControlOut = FlushCacheOut | StatsOut | TreeOut


class RuntimeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a scheduler reports at start-up, for the server's limits and API."""

    context_len: int  # tokens per request at most
    vocab_size: int
    pool_tokens: int  # KV pool size in tokens
    model_name: str


class ReadyOut(msgspec.Struct, tag=True, kw_only=True):
    """A process's start-up report: ready, or the error that stopped it."""

    process: str
    ok: bool
    error: str = ""
    info: RuntimeInfo | None = None  # schedulers only


SchedulerOutput = TokenBatchOut | ControlOut | ReadyOut
DetokenizerOutput = TextOut | ControlOut | ReadyOut
