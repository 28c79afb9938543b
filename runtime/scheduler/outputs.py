"""What the scheduler sends on for a request: its new tokens since the last output, and once,
what the detokenizer needs to know about it and the prompt logprobs."""

from __future__ import annotations

from ..wire.messages import DetokenizeSpec, TokenOut
from .request import Req


def token_out(req: Req) -> TokenOut:
    """The request's pending results as one output; they are cleared (sent)."""
    out = TokenOut(
        rid=req.rid,
        new_token_ids=req.pending_ids,
        prompt_tokens=len(req.prompt_ids),
        cached_tokens=req.cached_len,
        completion_tokens=len(req.output_ids),
        finish=req.finish,
        output_logprobs=req.pending_logprobs,
        output_top_logprobs=req.pending_top_logprobs,
    )
    if not req.spec_sent:
        out.spec = DetokenizeSpec(
            stop=req.sampling.stop_strings(),
            skip_special_tokens=req.sampling.skip_special_tokens,
            spaces_between_special_tokens=req.sampling.spaces_between_special_tokens,
        )
        req.spec_sent = True
    if req.return_logprob and req.logprob_start_len >= 0 and not req.input_logprobs_sent:
        lead: list[float | None] = [None] if req.logprob_start_len == 0 else []
        out.input_logprobs = lead + list(req.input_logprobs)
        out.input_top_logprobs = lead + list(req.input_top_logprobs)  # type: ignore[operator]
        req.input_logprobs_sent = True
    req.pending_ids, req.pending_logprobs, req.pending_top_logprobs = [], [], []
    return out
