"""A request's state inside the scheduler.

Token bookkeeping, for a request with prompt P and outputs O so far (fill = P + O):

    fill:      | p0 p1 ... p(n-1) | o0 o1 ... o(m-1) |
    KV held:   |<------------- kv_len ------------->|        pages cover kv_len tokens
    cached:    |<- cached_len ->|                            matched in the tree at admission

The next forward pass feeds fill[kv_len : kv_len + k]. While kv_len + 1 < len(fill) the request is
prefilling (chunks); afterwards each step feeds the one last token (decode). A retracted request
keeps its outputs and re-enters as a prefill of the whole fill.

kv_len counts the tokens whose KV is computed or already launched: it grows when a step is
launched, not when its results come back. Under overlap scheduling a sample is still in flight
when the next step is built; `future` is then that sample's placeholder id, the next decode's
input, and the outputs lack the token until the step is collected:

    fill:      | prompt | o0 ... o(m-1) | (future) |
    KV:        |<----------- kv_len --------->|          the launched decode fed o(m-1)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...radix_cache.base import NodeRef
from ..wire.messages import FinishReason, GenerateReq, TopLogprobs
from ..wire.sampling_params import SamplingParams
from .grammar import RequestGrammar


@dataclass(slots=True, eq=False)
class Req:
    rid: str
    prompt_ids: list[int]
    sampling: SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    arrival: float = field(default_factory=time.monotonic)

    output_ids: list[int] = field(default_factory=list)
    page_table: list[int] = field(default_factory=list)
    kv_len: int = 0
    cached_len: int = 0  # prompt tokens served by the radix cache at first admission
    node: NodeRef = None  # the locked radix node covering the tree-owned prefix of page_table
    tree_len: int = 0  # tokens of page_table owned by the tree (locked via node)
    admitted: bool = False
    # The hierarchical cache's load-back of this request's matched host prefix while it waits
    # (a LoadTicket; the request holds a lock on `loading.node` until admitted or released).
    loading: Any = None
    finish: FinishReason | None = None
    aborted: bool = False
    retractions: int = 0
    # Results not yet sent out.
    pending_ids: list[int] = field(default_factory=list)
    pending_logprobs: list[float] = field(default_factory=list)
    pending_top_logprobs: list[TopLogprobs] = field(default_factory=list)
    input_logprobs: list[float | None] = field(default_factory=list)
    input_top_logprobs: list[TopLogprobs | None] = field(default_factory=list)
    input_logprobs_sent: bool = False
    spec_sent: bool = False
    grammar: RequestGrammar | None = None  # a structured-output request's grammar state
    # Overlap scheduling: the placeholder of a sample in flight, and the launch it came from.
    future: int | None = None
    future_launch: int = -1

    @classmethod
    def from_wire(cls, msg: GenerateReq) -> Req:
        return cls(
            rid=msg.rid,
            prompt_ids=list(msg.input_ids),
            sampling=msg.sampling,
            return_logprob=msg.return_logprob,
            logprob_start_len=msg.logprob_start_len,
            top_logprobs_num=msg.top_logprobs_num,
        )

    @property
    def fill_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    def fill_slice(self, start: int, end: int) -> list[int]:
        """fill_ids[start:end] without building the whole concatenation (decodes ask every step)."""
        split = len(self.prompt_ids)
        if start >= split:
            return self.output_ids[start - split : end - split]
        if end <= split:
            return self.prompt_ids[start:end]
        return self.prompt_ids[start:] + self.output_ids[: end - split]

    @property
    def fill_len(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def is_prefilling(self) -> bool:
        return self.kv_len + 1 < self.fill_len

    @property
    def wants_input_logprobs(self) -> bool:
        return self.return_logprob and self.logprob_start_len >= 0 and not self.output_ids

    @property
    def max_match_len(self) -> int:
        """How much of fill may come from the cache: one token must be computed to get logits,
        and prompt logprobs need their positions recomputed."""
        limit = self.fill_len - 1
        if self.wants_input_logprobs:
            # The row before logprob_start_len predicts it, so that row must be computed too.
            limit = min(limit, max(self.logprob_start_len - 1, 0))
        return max(limit, 0)

    def remaining_new_tokens(self) -> int:
        return max(self.sampling.max_new_tokens - len(self.output_ids), 0)

    @property
    def outputs_decided(self) -> int:
        """Output tokens sampled so far, counting one still in flight."""
        return len(self.output_ids) + (self.future is not None)

    def ends_with_future(self, context_len: int) -> bool:
        """Its sample in flight (`future` set) is sure to end it (max_new_tokens or the context
        reached), so no decode after it needs scheduling."""
        outputs = len(self.output_ids) + 1
        return (
            outputs >= self.sampling.max_new_tokens or len(self.prompt_ids) + outputs >= context_len
        )
