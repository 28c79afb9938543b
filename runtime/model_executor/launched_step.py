"""A step the model runner has launched but not collected: its outputs on their way to the host.

`ModelRunner.launch` enqueues the forward pass and the sampling, records here the device tensors
the scheduler will need (sampled ids, logprobs, verified drafts, prompt logprobs), and starts
their copies to the host without waiting. `collect` waits for one event and turns the copies
into `StepResult`s:

    launch    forward -> sample -> copies to pinned host memory -> event    (returns at once)
    collect   event.synchronize() -> .tolist() -> StepResults

On the CPU the device is the host: the copies are the tensors themselves, nothing waits, and
the step's device time is the launch's own time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...utils.pinned_staging import index_tensor
from ..scheduler.step import StepHandle, StepRequest, StepResult, TopLogprobs


@dataclass(slots=True)
class InputLogprobSpan:
    request: int  # index in the step's requests
    offset: int  # first row in the step's prompt-logprob rows
    count: int


def to_host(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A host copy, started without waiting (pinned memory on a GPU); the tensor itself on CPU."""
    if tensor is None or tensor.device.type == "cpu":
        return tensor
    return tensor.to("cpu", non_blocking=True)


class LaunchedStep(StepHandle):
    """What one launch left for `collect` (see the module docstring)."""

    __slots__ = (
        "_done",
        "_launched_at",
        "_start",
        "input_spans",
        "input_top_ids",
        "input_top_values",
        "input_values",
        "logprobs",
        "next_ids",
        "requests",
        "sampled",
        "top_ids",
        "top_values",
        "verified_ids",
    )

    def __init__(self, requests: Sequence[StepRequest], device: torch.device) -> None:
        super().__init__()
        self.requests = requests
        self.sampled: list[int] = []  # indices of the requests that sampled one token
        self.next_ids: torch.Tensor | None = None  # [len(sampled)]
        self.logprobs: torch.Tensor | None = None  # [len(sampled)], where any asked
        self.top_ids: torch.Tensor | None = None
        self.top_values: torch.Tensor | None = None
        self.verified_ids: torch.Tensor | None = None  # drafted requests' rows, in order
        self.input_spans: list[InputLogprobSpan] = []
        self.input_values: torch.Tensor | None = None
        self.input_top_ids: torch.Tensor | None = None
        self.input_top_values: torch.Tensor | None = None
        self._launched_at = time.perf_counter()
        self._start: torch.cuda.Event | None = None
        self._done: torch.cuda.Event | None = None
        if device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()

    def samples_by_request(self) -> torch.Tensor | None:
        """[len(requests)] the sampled id of each request (0 where it sampled none), on the
        device: what the next launch's future placeholders index. None if nothing sampled."""
        if self.next_ids is None:
            return None
        if len(self.sampled) == len(self.requests):  # every request sampled, in order
            return self.next_ids
        index = index_tensor(self.sampled, self.next_ids.device)
        by_request = torch.zeros(len(self.requests), dtype=torch.int64, device=index.device)
        return by_request.index_copy_(0, index, self.next_ids)

    def start_copies(self) -> None:
        """Starts every copy to the host and marks the end of the step's device work."""
        for name in (
            "next_ids",
            "logprobs",
            "top_ids",
            "top_values",
            "verified_ids",
            "input_values",
            "input_top_ids",
            "input_top_values",
        ):
            setattr(self, name, to_host(getattr(self, name)))
        if self._start is not None:
            self._done = torch.cuda.Event(enable_timing=True)
            self._done.record()
        else:
            self.device_seconds = time.perf_counter() - self._launched_at

    def results(self) -> list[StepResult]:
        """Waits for the step, then one result per request, in order."""
        if self._done is not None and self._start is not None:
            self._done.synchronize()
            self.device_seconds = self._start.elapsed_time(self._done) / 1e3
        requests = self.requests
        results = [StepResult() for _ in requests]
        if self.next_ids is not None:
            ids = self.next_ids.tolist()
            lps = self.logprobs.tolist() if self.logprobs is not None else []
            top = TopLogprobRows(self.top_ids, self.top_values)
            for k, i in enumerate(self.sampled):
                result, request = results[i], requests[i]
                result.next_token_id = ids[k]
                if request.return_logprob:
                    result.logprob = lps[k]
                    if request.top_logprobs_num:
                        result.top_logprobs = top.row(k, request.top_logprobs_num)
        if self.verified_ids is not None:
            picked = self.verified_ids.tolist()
            offset = 0
            for request, result in zip(requests, results, strict=True):
                if request.draft_token_ids:
                    count = len(request.draft_token_ids) + 1
                    result.verified_ids = picked[offset : offset + count]
                    offset += count
        if self.input_values is not None:
            values = self.input_values.tolist()
            top = TopLogprobRows(self.input_top_ids, self.input_top_values)
            for span in self.input_spans:
                result = results[span.request]
                result.input_logprobs = values[span.offset : span.offset + span.count]
                n = requests[span.request].top_logprobs_num
                if n:
                    rows = range(span.offset, span.offset + span.count)
                    result.input_top_logprobs = [top.row(r, n) for r in rows]
        return results


class TopLogprobRows:
    """Top-k (token id, logprob) pairs per row, copied to Python lists once per step."""

    def __init__(self, ids: torch.Tensor | None, values: torch.Tensor | None) -> None:
        self.ids = ids.tolist() if ids is not None else []
        self.values = values.tolist() if values is not None else []

    def row(self, index: int, n: int) -> TopLogprobs:
        if not self.ids:
            return []
        return list(zip(self.ids[index][:n], self.values[index][:n], strict=True))
