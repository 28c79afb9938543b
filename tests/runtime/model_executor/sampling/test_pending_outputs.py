"""A sample still on the device (overlap scheduling) counts as the request's latest output: the
batch built with it pending equals the batch built with it appended to the outputs."""

from __future__ import annotations

import torch

from radixserve.runtime.model_executor.sampling import SamplingBatchInfo
from radixserve.runtime.model_executor.sampling.batch_info import PendingOutputs
from radixserve.runtime.wire.sampling_params import SamplingParams

VOCAB = 12


def test_a_pending_output_counts_like_an_applied_one(device: torch.device) -> None:
    params = [
        SamplingParams(repetition_penalty=1.5, frequency_penalty=0.5),
        SamplingParams(temperature=0.8, seed=3),
        SamplingParams(presence_penalty=2.0),
        SamplingParams(),
        SamplingParams(temperature=0.8, seed=5, frequency_penalty=1.0),
    ]
    prompts = [[1, 2], [3], [4, 5, 6], [7], [8]]
    outputs = [[2, 9], [1], [], [4, 4], [11, 0]]
    # Rows 0, 1, 2 and 4 have a sample in flight; it sits in the forward pass's input ids.
    pending_rows, tokens = [0, 1, 2, 4], [9, 7, 5, 11]
    source = torch.tensor([0, 9, 3, 7, 5, 1, 11], device=device)
    positions = [1, 3, 4, 6]
    assert [source[p].item() for p in positions] == tokens
    pending = PendingOutputs(pending_rows, source, positions)
    with_pending = SamplingBatchInfo.build(params, prompts, outputs, VOCAB, device, pending=pending)
    appended = [list(o) for o in outputs]
    for row, token in zip(pending_rows, tokens, strict=True):
        appended[row].append(token)
    reference = SamplingBatchInfo.build(params, prompts, appended, VOCAB, device)
    assert with_pending.steps.tolist() == reference.steps.tolist() == [3, 2, 1, 2, 3]
    ours, theirs = with_pending.penalties, reference.penalties
    assert ours is not None and theirs is not None
    assert torch.equal(ours.output_counts, theirs.output_counts)
    assert ours.seen is not None and theirs.seen is not None
    assert torch.equal(ours.seen, theirs.seen)
    logits = torch.randn(len(params), VOCAB, generator=torch.Generator().manual_seed(0))
    logits = logits.to(device)
    assert torch.equal(ours.apply(logits), theirs.apply(logits))
