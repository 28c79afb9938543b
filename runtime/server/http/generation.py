"""One request's life on the server side: send it, accumulate its outputs, time it.

A finish of type `abort` that carries a message and produced no tokens, for a request nobody
asked to abort, is the scheduler refusing the request: it becomes a 400 (500 for an internal
error). A request aborted through /abort_request simply ends with that finish reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from ...wire.messages import GenerateReq
from ..output import RequestOutputBuilder
from ..tokenizer_manager import RuntimeDiedError
from .errors import ApiError
from .state import ServerState

INTERNAL_ERROR_PREFIX = "internal error"  # the scheduler's message when a step failed


class Generation:
    def __init__(self, state: ServerState, req: GenerateReq) -> None:
        self.state = state
        self.req = req
        self.output = RequestOutputBuilder(req)
        self.timer = state.metrics.timer()

    async def stream(self) -> AsyncIterator[str]:
        """Yields each output's text delta after adding the output to `self.output`."""
        tm = self.state.manager()
        if self.req.rid in tm.queues:
            raise ApiError(400, f"request id {self.req.rid!r} is already in use", "rid")
        try:
            async for out in tm.generate(self.req):
                self.output.add(out.text_delta, out.token_out)
                self.timer.tokens(len(out.token_out.new_token_ids))
                if self.output.finished:
                    self._on_finish()
                yield out.text_delta
        except RuntimeDiedError as exc:
            raise ApiError(503, f"the runtime died: {exc}", code="unavailable") from exc
        finally:
            self.state.user_aborted.discard(self.req.rid)

    async def run(self) -> RequestOutputBuilder:
        async for _ in self.stream():
            pass
        return self.output

    def _on_finish(self) -> None:
        finish = self.output.finish
        assert finish is not None
        last = self.output.last
        self.timer.finish(
            finish.type, len(self.req.input_ids), last.cached_tokens if last is not None else 0
        )
        refused = (
            finish.type == "abort"
            and finish.message is not None
            and not self.output.output_ids
            and self.req.rid not in self.state.user_aborted
        )
        if refused:
            status = 500 if finish.message.startswith(INTERNAL_ERROR_PREFIX) else 400
            raise ApiError(status, finish.message, code="rejected")


async def run_all(generations: Sequence[Generation]) -> list[RequestOutputBuilder]:
    """Runs the requests concurrently; the first failure cancels (aborts) the others."""
    tasks = [asyncio.ensure_future(g.run()) for g in generations]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
