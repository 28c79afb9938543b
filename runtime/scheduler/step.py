"""The seam between the scheduler and the model runner: what it hands the runner each step,
what it gets back, and the runner's interface (`StepRunner`: launch a step, collect it later).

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

    # Its new tokens: a prefill chunk or one decode token. The first may be a future
    # placeholder (`future_token`): the sample of the previous launch, resolved on the device.
    input_ids: Sequence[int]
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

    @property
    def has_future(self) -> bool:
        """Its first input is the previous launch's sample, still on the device."""
        return self.input_ids[0] < 0


TopLogprobs = list[tuple[int, float]]


@dataclass(slots=True)
class StepRequest:
    """One request's part of a step: its slice plus how to sample after it."""

    slice: RequestSlice
    sampling: SamplingParams
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]  # applied so far; a future input (slice.has_future) comes after
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


def future_token(index: int) -> int:
    """The placeholder input id for the token the previous launch sampled for its request
    `index` (SGLang's future ids): negative, so it can never be a real token."""
    return -1 - index


def future_index(token_id: int) -> int:
    """The previous launch's request index a placeholder stands for."""
    return -1 - token_id


class StepHandle:
    """A launched step: what `StepRunner.launch` returns and `collect` takes back, once.

    Runners subclass it with their own pending state. After `collect`, `device_seconds` is how
    long the device worked on the step (None where the runner cannot tell).
    """

    __slots__ = ("device_seconds",)

    def __init__(self) -> None:
        self.device_seconds: float | None = None


@runtime_checkable
class StepRunner(Protocol):
    """What the scheduler drives: one forward pass and sampling per step, split into a launch
    that enqueues the device work and a collect that waits for it, plus what its process and
    the offline Engine read once at start-up.

        scheduler   handle = runner.launch([StepRequest, ...])   returns once the work is queued
                    results = runner.collect(handle)            one result per request, in order
        start-up    context_len, vocab_size, num_kv_pages, model_name
        exit        runner.shutdown()

    Overlap scheduling launches step N+1 before collecting step N, so the device computes N
    while the host builds N+1 and then processes N's results:

        host     | build N+1 | launch N+1 | collect N, apply N | build N+2 | launch N+2 | ...
        device   |..... step N .....|........ step N+1 ..........|...... step N+2 ....

    Contract:
    - `launch` reads the requests' host data (ids, page tables, outputs) before it returns;
      the scheduler may change them afterwards. Handles are collected in launch order, once.
    - Futures: the first input id of a slice may be a placeholder, `future_token(i)`: the
      token the previous launch sampled for its request i. The runner resolves it on the
      device, so the sample never travels to the host and back in between. That request's
      `output_ids` lack the pending token; the runner counts it where sampling reads the
      outputs (penalties, the step of a seeded draw).
    - `launch` or `collect` may raise; an exception with a true `fatal` attribute (a lost
      tensor-parallel worker) ends the runtime, any other aborts the requests of the steps in
      flight.

    Implemented by the model runner, rank 0 of a tensor-parallel group, and the stand-ins of
    tests and benchmarks.
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

    def launch(self, requests: Sequence[StepRequest]) -> StepHandle:
        """Enqueues the step's forward pass and sampling; returns without waiting for them."""
        ...

    def collect(self, handle: StepHandle) -> list[StepResult]:
        """Waits for a launched step; one result per request of its launch, in order."""
        ...

    def shutdown(self) -> None:
        """Releases what the runner started (worker processes); a no-op where it started none."""
        ...
