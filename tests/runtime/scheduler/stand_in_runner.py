"""A stand-in runner for scheduler tests: no model, but a real paged store of token ids.

Each step writes the new tokens into a slot store through the request's page table and reads the
whole sequence back through it; the next token is a hash of what it read. A wrong page table, a
page freed while in use, or a stale shared prefix therefore changes the output, exactly as it
would with a real model. Banned tokens (min_new_tokens) move the pick to the next allowed id,
and logprobs are hashes too, of the sequence read and the token they are for.
"""

from __future__ import annotations

import dataclasses
import zlib
from array import array
from collections.abc import Sequence

from radixserve.runtime.scheduler.step import StepHandle, StepRequest, StepResult, future_index


class StandInHandle(StepHandle):
    __slots__ = ("number", "results")

    def __init__(self, number: int, results: list[StepResult]) -> None:
        super().__init__()
        self.number = number
        self.results = results


class StandInRunner:
    """A `StepRunner` (structurally: plain attributes where the protocol has properties).

    `launch` computes at once (this "device" is the host) and `collect` hands the results back;
    a future placeholder is resolved from the previous launch's samples, as the model runner
    does on its device, and anything else (an older launch, a request that did not sample, a
    collect out of order) fails loudly.
    """

    model_name = "stand-in"

    def __init__(
        self, num_pages: int, page_size: int, vocab_size: int = 997, context_len: int = 4096
    ) -> None:
        self.page_size = page_size
        self.vocab_size = vocab_size
        self.context_len = context_len
        self.num_kv_pages = num_pages
        self.slots = array("q", [-1] * (num_pages * page_size))
        self.steps = 0
        self.prefill_tokens = 0
        self.launched = 0
        self.collected = 0
        self.last_collected = 0
        self.max_in_flight = 0  # launched but not collected, at most (2 under overlap)
        self.futures_resolved = 0
        self.last_sampled: list[int | None] = []

    def launch(self, requests: Sequence[StepRequest]) -> StandInHandle:
        results = self.step([self._resolve(r) for r in requests])
        self.last_sampled = [r.next_token_id for r in results]
        self.launched += 1
        self.max_in_flight = max(self.max_in_flight, self.launched - self.collected)
        return StandInHandle(self.launched, results)

    def collect(self, handle: StepHandle) -> list[StepResult]:
        assert isinstance(handle, StandInHandle)
        # In launch order, once; a step abandoned after a failure is never collected.
        assert handle.number > self.last_collected, "steps are collected in order, once"
        self.last_collected = handle.number
        self.collected += 1
        return handle.results

    def _resolve(self, request: StepRequest) -> StepRequest:
        """The request with its future placeholder replaced by the token it stands for (which
        its outputs then end with, as the runner counts it)."""
        s = request.slice
        if not s.has_future:
            return request
        assert all(t >= 0 for t in s.input_ids[1:]), "only a slice's first input is a future"
        token = self.last_sampled[future_index(s.input_ids[0])]
        assert token is not None, "a placeholder for a request that did not sample"
        self.futures_resolved += 1
        return dataclasses.replace(
            request,
            slice=dataclasses.replace(s, input_ids=[token, *s.input_ids[1:]]),
            output_ids=[*request.output_ids, token],
        )

    def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        """The eager computation behind `launch` (test runners override it to fail)."""
        self.steps += 1
        results = []
        for r in requests:
            s = r.slice
            ps = self.page_size
            for offset, token in enumerate(s.input_ids):
                pos = s.prefix_len + offset
                self.slots[s.page_table[pos // ps] * ps + pos % ps] = token
            if len(s.input_ids) > 1 or not r.output_ids:
                self.prefill_tokens += len(s.input_ids)
            seen = [self.slots[s.page_table[p // ps] * ps + p % ps] for p in range(s.seq_len)]
            result = StepResult()
            if r.draft_token_ids:  # the choice after each row: [last, *drafts]
                first = s.prefix_len
                result.verified_ids = [
                    self.next_token(seen[: p + 1]) for p in range(first, s.seq_len)
                ]
            elif r.sample:
                token = self.next_token(seen)
                while r.banned_token_ids and token in r.banned_token_ids:
                    token = (token + 1) % self.vocab_size
                result.next_token_id = token
                if r.return_logprob:
                    result.logprob = fake_logprob(seen, token)
            if s.logits_from is not None and not r.draft_token_ids:
                result.input_logprobs = self.input_logprobs(r, seen)
            results.append(result)
        return results

    @staticmethod
    def input_logprobs(r: StepRequest, seen: list[int]) -> list[float]:
        """As the model runner: the rows from logits_from predict the prompt tokens after them."""
        s = r.slice
        assert s.logits_from is not None
        first = s.prefix_len + s.logits_from + 1
        last = min(s.seq_len, len(r.prompt_ids) - 1)
        return [fake_logprob(seen[:t], r.prompt_ids[t]) for t in range(first, last + 1)]

    def next_token(self, sequence: Sequence[int]) -> int:
        return next_token(sequence, self.vocab_size)

    def shutdown(self) -> None:
        pass


def fake_logprob(sequence: Sequence[int], token: int) -> float:
    """A made-up log-probability of `token` after `sequence`, determined by both."""
    return -(zlib.crc32(array("q", [*sequence, token]).tobytes()) % 1000) / 100


def next_token(sequence: Sequence[int], vocab_size: int) -> int:
    return zlib.crc32(array("q", sequence).tobytes()) % vocab_size


def expected_output(prompt: Sequence[int], max_new_tokens: int, vocab_size: int = 997) -> list[int]:
    """What a request produces alone: the reference for every concurrency test."""
    seq = list(prompt)
    out = []
    for _ in range(max_new_tokens):
        token = next_token(seq, vocab_size)
        out.append(token)
        seq.append(token)
    return out
