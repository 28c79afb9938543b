"""What a launch computes after the forward pass, all enqueued on the device: each sampling
request's next token, the greedy choice after every drafted row, and prompt-token logprobs.
The results stay device tensors in the `LaunchedStep` until `collect` (launched_step.py).

Index tensors go over through pinned staging (`index_tensor`): `torch.tensor(..., device=cuda)`
would wait for the device's queue, which under overlap scheduling holds the previous step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from ...utils.pinned_staging import index_tensor
from ..constrained.bitmask import apply_token_bitmask
from ..scheduler.step import StepRequest
from .forward_batch import ForwardBatch
from .launched_step import InputLogprobSpan, LaunchedStep
from .sampling import Sampler, SamplingBatchInfo, token_logprobs, top_logprobs
from .sampling.batch_info import PendingOutputs, stack_vocab_masks


def sample(
    requests: Sequence[StepRequest],
    batch: ForwardBatch,
    logits: torch.Tensor,
    step: LaunchedStep,
    sampler: Sampler,
    vocab_size: int,
) -> None:
    """One token for every request that samples (drafted ones are verified instead)."""
    chosen = [i for i, r in enumerate(requests) if r.sample and not r.draft_token_ids]
    if not chosen:
        return
    rows = [batch.logits_ranges[i][1] - 1 for i in chosen]
    if rows == list(range(logits.shape[0])):  # a pure decode batch: every row, in order
        picked = logits
    else:
        picked = logits.index_select(0, index_tensor(rows, logits.device))
    info = SamplingBatchInfo.build(
        [requests[i].sampling for i in chosen],
        [requests[i].prompt_ids for i in chosen],
        [requests[i].output_ids for i in chosen],
        vocab_size,
        logits.device,
        vocab_masks=[requests[i].vocab_mask for i in chosen],
        banned_token_ids=[requests[i].banned_token_ids for i in chosen],
        pending=pending_outputs(requests, batch, chosen),
    )
    num_top = max(requests[i].top_logprobs_num for i in chosen)
    # Logprobs cost a vocabulary-wide logsumexp per row: only when some request asked.
    want_logprobs = any(requests[i].return_logprob for i in chosen)
    out = sampler(picked, info, num_top, return_logprobs=want_logprobs)
    step.sampled, step.next_ids = chosen, out.next_token_ids
    if want_logprobs:
        step.logprobs = out.logprobs
        step.top_ids, step.top_values = out.top_logprob_ids, out.top_logprob_values


def pending_outputs(
    requests: Sequence[StepRequest], batch: ForwardBatch, chosen: list[int]
) -> PendingOutputs | None:
    """The sampled rows whose request has an output in flight: a future input, resolved in
    `batch.input_ids` at the slice's first row, which follows the request's `output_ids`."""
    rows = [k for k, i in enumerate(chosen) if requests[i].slice.has_future]
    if not rows:
        return None
    starts = list(itertools.accumulate((r.slice.extend_len for r in requests), initial=0))
    return PendingOutputs(rows, batch.input_ids, [starts[chosen[k]] for k in rows])


def verify_drafts(
    requests: Sequence[StepRequest],
    batch: ForwardBatch,
    logits: torch.Tensor,
    step: LaunchedStep,
    vocab_size: int,
) -> None:
    """Greedy choice after every row of each speculative slice, in one argmax.
    The scheduler drafts only for greedy requests without penalties, bias or logprobs, so
    the argmax (under the grammar's mask for that row, if any) is what sampling would pick."""
    drafting = [i for i, r in enumerate(requests) if r.draft_token_ids]
    if not drafting:
        return
    rows = [row for i in drafting for row in range(*batch.logits_ranges[i])]
    scores = logits.index_select(0, index_tensor(rows, logits.device))
    masks = _draft_masks(requests, drafting, vocab_size, logits.device)
    if masks is not None:
        scores = apply_token_bitmask(scores, masks)
    step.verified_ids = scores.argmax(-1)


def _draft_masks(
    requests: Sequence[StepRequest], drafting: list[int], vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    """[verified rows, W]: each grammar request's per-row masks, all-allowed elsewhere;
    None when no drafting request has a grammar."""
    rows: list[torch.Tensor | None] = []
    for i in drafting:
        mask = requests[i].vocab_mask
        count = len(requests[i].draft_token_ids or ()) + 1
        rows.extend(mask.unbind(0) if mask is not None else [None] * count)
    return stack_vocab_masks(rows, vocab_size, device)


def input_logprobs(
    requests: Sequence[StepRequest], batch: ForwardBatch, logits: torch.Tensor, step: LaunchedStep
) -> None:
    """Logprobs (and top logprobs) of the prompt tokens each slice's rows predict from its
    `logits_from`."""
    rows: list[int] = []
    targets: list[int] = []
    for i, request in enumerate(requests):
        s = request.slice
        if s.logits_from is None or request.draft_token_ids:
            continue
        start, _ = batch.logits_ranges[i]
        first_target = s.prefix_len + s.logits_from + 1
        last_target = min(s.seq_len, len(request.prompt_ids) - 1)
        count = max(0, last_target - first_target + 1)
        step.input_spans.append(InputLogprobSpan(i, len(rows), count))
        rows.extend(range(start, start + count))
        targets.extend(request.prompt_ids[first_target : first_target + count])
    if not rows:
        return
    row_logits = logits.index_select(0, index_tensor(rows, logits.device))
    step.input_values = token_logprobs(row_logits, index_tensor(targets, logits.device))
    num_top = max(requests[span.request].top_logprobs_num for span in step.input_spans)
    if num_top:
        step.input_top_ids, step.input_top_values = top_logprobs(row_logits, num_top)
