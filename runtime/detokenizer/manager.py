"""The detokenizer's per-request state: one `IncrementalDetokenizer` per live request.

Shared by the detokenizer process and the offline Engine, so a stop string ends a request the
same way in both: the output that matched it leaves here with `finish=stop(matched=string)`,
whoever runs this tells the scheduler (`FinishReq` over the wire, or
`Scheduler.finish_externally` in process), and outputs still in flight for the request are
dropped here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from ..wire.messages import AbortCode, FinishReason, TextOut, TokenBatchOut, TokenOut
from .incremental import IncrementalDetokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class DetokenizerManager:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.states: dict[str, IncrementalDetokenizer] = {}

    def handle(self, batch: TokenBatchOut) -> list[TextOut]:
        return [t for t in (self.detokenize(out) for out in batch.outputs) if t is not None]

    def detokenize(self, out: TokenOut) -> TextOut | None:
        """The output's text delta; None for an output of a request that has ended here.

        A request whose tokens cannot be decoded (the tokenizer raises) ends here with an
        `internal` abort; the other requests of the batch are unaffected.
        """
        try:
            return self._detokenize(out)
        except Exception as exc:  # one request's bad tokens must not stop the others
            logger.exception("detokenizing request %s failed", out.rid)
            self.states.pop(out.rid, None)
            message = f"detokenizing the output failed: {type(exc).__name__}: {exc}"
            out.finish = msgspec.structs.replace(
                FinishReason.abort(AbortCode.INTERNAL, message), external=True
            )
            return TextOut(rid=out.rid, text_delta="", token_out=out)

    def _detokenize(self, out: TokenOut) -> TextOut | None:
        state = self.states.get(out.rid)
        if state is None and out.spec is not None:
            state = IncrementalDetokenizer(
                self.tokenizer,
                stop_strings=out.spec.stop,
                skip_special_tokens=out.spec.skip_special_tokens,
                spaces_between_special_tokens=out.spec.spaces_between_special_tokens,
            )
            self.states[out.rid] = state
        if state is None:
            # Finished here already (stop string) or refused before it ran: pass finals through.
            return TextOut(rid=out.rid, text_delta="", token_out=out) if out.finish else None
        result = state.add(out.new_token_ids, final=out.finish is not None)
        if result.matched_stop is not None:
            out.finish = FinishReason("stop", matched=result.matched_stop, external=True)
        if out.finish is not None:
            del self.states[out.rid]
        return TextOut(rid=out.rid, text_delta=result.delta, token_out=out)
