"""What the scheduler hands the model runner each step, and what it gets back.

Plain data with no torch import: the scheduler depends on these, never on model code, so it can
run against a stand-in runner in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RequestSlice:
    """What one request contributes to a forward pass."""

    input_ids: Sequence[int]  # its new tokens: a prefill chunk or one decode token
    prefix_len: int  # tokens already in its KV pages
    page_table: Sequence[int]  # pages covering prefix_len + len(input_ids) tokens
    logits_from: int | None = (
        None  # chunk index from which every row needs logits; None = last only
    )

    @property
    def extend_len(self) -> int:
        return len(self.input_ids)

    @property
    def seq_len(self) -> int:
        return self.prefix_len + len(self.input_ids)


TopLogprobs = list[tuple[int, float]]


@dataclass(slots=True)
class StepRequest:
    """One request's part of a step: its slice plus how to sample after it."""

    slice: RequestSlice
    sampling: Any  # SamplingParams
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]
    sample: bool  # False for a prefill chunk that does not reach the end of the prompt
    return_logprob: bool = False
    top_logprobs_num: int = 0
    # [W] int32 allowed-token bitmask from the request's grammar (a CPU torch tensor), if any.
    vocab_mask: Any = None
    # Speculative decoding: the slice is [last token, *drafts] with logits on every row; the
    # runner returns the greedy choice after each row in `StepResult.verified_ids`.
    draft_token_ids: Sequence[int] | None = None
    # Tokens this sample must not pick (EOS and stop ids before min_new_tokens is reached).
    banned_token_ids: Sequence[int] | None = None


@dataclass(slots=True)
class StepResult:
    next_token_id: int | None = None
    logprob: float | None = None
    top_logprobs: TopLogprobs | None = None
    # Logprobs of prompt tokens predicted by this chunk's rows from `slice.logits_from`:
    # entry t is for the prompt token at position prefix_len + logits_from + t + 1.
    input_logprobs: list[float] = field(default_factory=list)
    input_top_logprobs: list[TopLogprobs] = field(default_factory=list)
    # With drafts: the model's greedy token after each of the slice's rows (len(drafts) + 1).
    verified_ids: list[int] | None = None
