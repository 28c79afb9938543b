"""Assembles one request's user-facing result from the scheduler's token outputs.

The result follows SGLang's `/generate` shape: `text`, `output_ids` and `meta_info` with
`prompt_tokens`, `completion_tokens`, `cached_tokens`, `finish_reason` and, when asked,
logprob lists of `(logprob, token_id, None)` triples.
"""

from __future__ import annotations

import time
from typing import Any

from ..wire.messages import FinishReason, GenerateReq, TokenOut

LogprobEntry = tuple[float | None, int, None]


class RequestOutputBuilder:
    """Accumulates text deltas (already detokenized) and token outputs of one request."""

    def __init__(self, req: GenerateReq) -> None:
        self.req = req
        self.started = time.monotonic()
        self.text = ""
        self.output_ids: list[int] = []
        self.finish: FinishReason | None = None
        self.last: TokenOut | None = None
        self.output_logprobs: list[LogprobEntry] = []
        self.output_top_logprobs: list[list[LogprobEntry]] = []
        self.input_logprobs: list[LogprobEntry] = []
        self.input_top_logprobs: list[list[LogprobEntry] | None] = []

    @property
    def finished(self) -> bool:
        return self.finish is not None

    def add(self, text_delta: str, out: TokenOut) -> None:
        """Takes one step's output and its text delta; `out.finish` ends the request."""
        if self.finished:
            return
        self.last = out
        self.output_ids.extend(out.new_token_ids)
        self.text += text_delta
        if self.req.return_logprob:
            self._add_logprobs(out)
        self.finish = out.finish

    def _add_logprobs(self, out: TokenOut) -> None:
        for token, lp in zip(out.new_token_ids, out.output_logprobs, strict=False):
            self.output_logprobs.append((lp, token, None))
        for top in out.output_top_logprobs:
            self.output_top_logprobs.append([(v, t, None) for t, v in top])
        if out.input_logprobs:
            start = max(self.req.logprob_start_len, 0)
            prompt = self.req.input_ids[start:]
            self.input_logprobs = [
                (lp, tok, None) for lp, tok in zip(out.input_logprobs, prompt, strict=False)
            ]
            self.input_top_logprobs = [
                None if top is None else [(v, t, None) for t, v in top]
                for top in out.input_top_logprobs
            ]

    def meta_info(self) -> dict[str, Any]:
        last = self.last
        meta: dict[str, Any] = {
            "id": self.req.rid,
            "prompt_tokens": len(self.req.input_ids),
            "completion_tokens": len(self.output_ids),
            "cached_tokens": last.cached_tokens if last else 0,
            "finish_reason": self.finish.to_json() if self.finish else None,
            "e2e_latency": time.monotonic() - self.started,
        }
        if self.req.return_logprob:
            meta["output_token_logprobs"] = self.output_logprobs
            if self.req.top_logprobs_num:
                meta["output_top_logprobs"] = self.output_top_logprobs
            if self.req.logprob_start_len >= 0:
                meta["input_token_logprobs"] = self.input_logprobs
                if self.req.top_logprobs_num:
                    meta["input_top_logprobs"] = self.input_top_logprobs
        return meta

    def result(self, text: str | None = None) -> dict[str, Any]:
        return {
            "text": self.text if text is None else text,
            "output_ids": list(self.output_ids),
            "meta_info": self.meta_info(),
        }
