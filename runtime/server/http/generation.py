"""One request's life on the server side: send it, accumulate its outputs, time it.

How a request ended is the finish reason's data, never its message text. An abort's code picks
the answer (`ABORT_ERRORS`): a refused request is a 400, a failed scheduler step a 500, a
runtime shutting down a 503. An abort the caller asked for (/abort_request, a disconnect) and
one where the output could not continue under its grammar are answers: the result simply ends
with that finish reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from ...wire.messages import AbortCode, FinishReason, GenerateReq
from ..output import RequestOutputBuilder
from ..tokenizer_manager import BadMessageError, RuntimeDiedError
from .errors import ApiError
from .state import ServerState

# Abort codes that are errors: the HTTP status and the error body's `code`.
ABORT_ERRORS: dict[AbortCode, tuple[int, str]] = {
    AbortCode.REJECTED: (400, "rejected"),
    AbortCode.INTERNAL: (500, "internal_error"),
    AbortCode.SHUTDOWN: (503, "unavailable"),
}


class Generation:
    """`replica`: the data-parallel replica the request must run on (None: the router picks);
    `log_metrics=False` leaves it out of /metrics (SGLang's flag, set by health probes)."""

    def __init__(
        self,
        state: ServerState,
        req: GenerateReq,
        *,
        replica: int | None = None,
        log_metrics: bool = True,
    ) -> None:
        self.state = state
        self.req = req
        self.replica = replica
        self.output = RequestOutputBuilder(req)
        self.timer = state.metrics.timer() if log_metrics else None

    async def stream(self) -> AsyncIterator[str]:
        """Yields each output's text delta after adding the output to `self.output`."""
        tm = self.state.manager()
        if self.req.rid in tm.queues:
            raise ApiError(400, f"request id {self.req.rid!r} is already in use", "rid")
        try:
            async for out in tm.generate(self.req, self.replica):
                self.output.add(out.text_delta, out.token_out)
                if self.timer is not None:
                    self.timer.tokens(len(out.token_out.new_token_ids))
                if self.output.finished:
                    self._on_finish()
                yield out.text_delta
        except RuntimeDiedError as exc:
            raise ApiError(503, f"the runtime died: {exc}", code="unavailable") from exc
        except BadMessageError as exc:
            raise ApiError(500, str(exc), code="internal_error") from exc

    async def run(self) -> RequestOutputBuilder:
        async for _ in self.stream():
            pass
        return self.output

    def _on_finish(self) -> None:
        finish = self.output.finish
        assert finish is not None
        last = self.output.last
        if self.timer is not None:
            cached = last.cached_tokens if last is not None else 0
            self.timer.finish(finish.type, len(self.req.input_ids), cached)
        error = abort_error(finish)
        if error is not None:
            raise error


def abort_error(finish: FinishReason) -> ApiError | None:
    """The error a finish stands for, or None when it is an answer."""
    code = finish.code if finish.type == "abort" else None
    if code is None or code not in ABORT_ERRORS:
        return None
    status, error_code = ABORT_ERRORS[code]
    return ApiError(status, finish.message or f"aborted ({code})", code=error_code)


async def run_all(generations: Sequence[Generation]) -> list[RequestOutputBuilder]:
    """Runs the requests concurrently; the first failure cancels (aborts) the others."""
    tasks = [asyncio.ensure_future(g.run()) for g in generations]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
