"""A stand-in runner for scheduler tests: no model, but a real paged store of token ids.

Each step writes the new tokens into a slot store through the request's page table and reads the
whole sequence back through it; the next token is a hash of what it read. A wrong page table, a
page freed while in use, or a stale shared prefix therefore changes the output, exactly as it
would with a real model.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Sequence

from radixserve.runtime.scheduler.step import StepRequest, StepResult


class StandInRunner:
    """A `StepRunner` (structurally: plain attributes where the protocol has properties)."""

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

    def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
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
                result.next_token_id = self.next_token(seen)
            results.append(result)
        return results

    def next_token(self, sequence: Sequence[int]) -> int:
        return next_token(sequence, self.vocab_size)

    def shutdown(self) -> None:
        pass


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
