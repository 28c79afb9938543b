"""The seam between the scheduler and the model runner: what it hands the runner each step,
what it gets back, and the runner's interface (`StepRunner`).

Plain data with no torch import at run time: the scheduler depends on these, never on model
code, so it can run against a stand-in runner in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..wire.sampling_params import SamplingParams

if TYPE_CHECKING:
    import torch


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
    sampling: SamplingParams
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]
    sample: bool  # False for a prefill chunk that does not reach the end of the prompt
    return_logprob: bool = False
    top_logprobs_num: int = 0
    # [W] int32 allowed-token bitmask from the request's grammar (a CPU torch tensor), if any.
    vocab_mask: torch.Tensor | None = None
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


@runtime_checkable
class StepRunner(Protocol):
    """What the scheduler drives: one forward pass and sampling per `step`, plus what its
    process and the offline Engine read once at start-up.

        scheduler   results = runner.step([StepRequest, ...])   one result per request, in order
        start-up    context_len, vocab_size, num_kv_pages, model_name
        exit        runner.shutdown()

    `step` may raise; an exception with a true `fatal` attribute (a lost tensor-parallel worker)
    ends the runtime, any other aborts that step's requests. Implemented by the model runner,
    rank 0 of a tensor-parallel group, and the stand-ins of tests and benchmarks.
    """

    @property
    def context_len(self) -> int:
        """The longest sequence (prompt + output) the model takes."""
        ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def num_kv_pages(self) -> int:
        """Pages in the KV pool: the prefix cache hands out page ids 0 .. num_kv_pages - 1."""
        ...

    @property
    def model_name(self) -> str:
        """The name the APIs report for the model (its directory or file name)."""
        ...

    def step(self, requests: Sequence[StepRequest]) -> list[StepResult]: ...

    def shutdown(self) -> None:
        """Releases what the runner started (worker processes); a no-op where it started none."""
        ...
