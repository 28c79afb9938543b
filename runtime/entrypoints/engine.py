"""The offline Engine: the scheduler loop, in-process, behind a `generate` call.

    engine = radixserve.Engine()                       # the embedded SmolLM2
    out = engine.generate("The capital of France is", {"max_new_tokens": 8, "temperature": 0})
    out["text"], out["output_ids"], out["meta_info"]["cached_tokens"]

It runs the same `Scheduler` as the server's scheduler process and the same `DetokenizerManager`
as the detokenizer process, so batching, chunked prefill, radix-cache sharing, eviction and stop
strings behave the same; only the transport is missing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from ...utils.gc_tuning import freeze_startup_objects, release_frozen_objects
from ..config.server_args import ServerArgs
from ..detokenizer.manager import DetokenizerManager
from ..server.output import RequestOutputBuilder
from ..server.request_builder import InvalidRequestError, RequestBuilder
from ..wire.messages import AbortCode, GenerateReq, TokenOut
from .components import RuntimeState, build_runtime

Prompt = str | Sequence[str] | None
SamplingArg = dict[str, Any] | Sequence[dict[str, Any]] | None


class Engine:
    def __init__(self, model_path: str | None = None, **options: Any) -> None:
        self.args = ServerArgs(model_path=model_path).replace(**options)
        if self.args.dp_size != 1:
            raise ValueError(
                "the offline Engine runs one scheduler in this process; dp_size > 1 needs the "
                "server (radixserve.launch_server or rs.Runtime)"
            )
        self.state: RuntimeState = build_runtime(self.args)
        freeze_startup_objects()
        self.tokenizer = self.state.tokenizer
        self.builder: RequestBuilder = self.state.request_builder
        self.scheduler = self.state.scheduler
        self._ids = itertools.count()
        self._detokenizer = DetokenizerManager(self.tokenizer)

    # --- public API ----------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt = None,
        sampling_params: SamplingArg = None,
        input_ids: Sequence[int] | Sequence[Sequence[int]] | None = None,
        return_logprob: bool = False,
        logprob_start_len: int = -1,
        top_logprobs_num: int = 0,
        stream: bool = False,
    ) -> dict[str, Any] | list[dict[str, Any]] | Iterator[dict[str, Any]]:
        """Generates for one prompt (returns a dict) or a batch (returns a list of dicts).

        With `stream=True` (single prompt only) returns an iterator of partial dicts whose `text`
        is the delta since the previous one.
        """
        ids_batch, single = self._normalize_inputs(prompt, input_ids)
        params = self._normalize_params(sampling_params, len(ids_batch))
        reqs = [
            self.builder.build(
                self._new_rid(),
                ids,
                p,
                return_logprob=return_logprob,
                logprob_start_len=logprob_start_len,
                top_logprobs_num=top_logprobs_num,
                stream=stream,
            )
            for ids, p in zip(ids_batch, params, strict=True)
        ]
        if stream:
            if not single:
                raise InvalidRequestError("stream=True takes a single prompt", "stream")
            return self._stream(reqs[0])
        results = self._run(reqs)
        return results[0] if single else results

    def flush_cache(self) -> bool:
        return self.scheduler.flush_cache()

    def shutdown(self) -> None:
        self._abort(list(self.scheduler.requests), "engine shut down", AbortCode.SHUTDOWN)
        self.state.runner.shutdown()  # stops tensor-parallel worker ranks, if any
        release_frozen_objects()  # so `del engine` frees its model and KV pool

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- the loop ------------------------------------------------------------------------------

    def _run(self, reqs: list[GenerateReq]) -> list[dict[str, Any]]:
        builders = {r.rid: RequestOutputBuilder(r) for r in reqs}
        for req in reqs:
            self.scheduler.add_request(req)
        pending = set(builders)
        try:
            while pending:
                for out in self._step():
                    if out.rid in builders:
                        self._feed(builders[out.rid], out)
                        if builders[out.rid].finished:
                            pending.discard(out.rid)
        except BaseException:
            self._abort(list(pending), "caller interrupted", AbortCode.CLIENT)
            raise
        return [builders[r.rid].result() for r in reqs]

    def _stream(self, req: GenerateReq) -> Iterator[dict[str, Any]]:
        builder = RequestOutputBuilder(req)
        self.scheduler.add_request(req)
        try:
            while not builder.finished:
                for out in self._step():
                    if out.rid == req.rid:
                        delta = self._feed(builder, out)
                        yield builder.result(text=delta)
        finally:
            if not builder.finished:
                self._abort([req.rid], "stream closed", AbortCode.CLIENT)

    def _step(self) -> list[TokenOut]:
        if not self.scheduler.has_work:
            raise RuntimeError("scheduler went idle with requests still pending")
        return self.scheduler.step()

    def _feed(self, builder: RequestOutputBuilder, out: TokenOut) -> str:
        text_out = self._detokenizer.detokenize(out)
        if text_out is None:  # in flight when a stop string ended the request
            return ""
        finish = text_out.token_out.finish
        if finish is not None and finish.external:
            # What the server's FinishReq does: the scheduler frees it, counted as finished.
            self.scheduler.finish_externally(out.rid, finish)
        builder.add(text_out.text_delta, text_out.token_out)
        return text_out.text_delta

    def _abort(self, rids: list[str], message: str, code: AbortCode) -> None:
        """Aborts the requests; their final outputs also end their detokenizer states."""
        for rid in rids:
            self.scheduler.abort(rid, message, code)
        for out in self.scheduler.step():
            self._detokenizer.detokenize(out)

    # --- inputs --------------------------------------------------------------------------------

    def _new_rid(self) -> str:
        return f"engine-{uuid.uuid4().hex[:8]}-{next(self._ids)}"

    def _normalize_inputs(
        self, prompt: Prompt, input_ids: Sequence[int] | Sequence[Sequence[int]] | None
    ) -> tuple[list[list[int]], bool]:
        if (prompt is None) == (input_ids is None):
            raise InvalidRequestError("pass exactly one of prompt and input_ids", "prompt")
        if prompt is not None:
            if isinstance(prompt, str):
                return [self.builder.encode(prompt)], True
            if not prompt:
                raise InvalidRequestError("the prompt list is empty", "prompt")
            return [self.builder.encode(p) for p in prompt], False
        assert input_ids is not None
        if input_ids and all(isinstance(x, (list, tuple)) for x in input_ids):
            return [list(x) for x in input_ids], False  # type: ignore[arg-type]
        return [list(input_ids)], True  # type: ignore[arg-type]

    @staticmethod
    def _normalize_params(params: SamplingArg, count: int) -> list[dict[str, Any] | None]:
        if params is None or isinstance(params, dict):
            return [params] * count
        if len(params) != count:
            raise InvalidRequestError(
                f"got {len(params)} sampling_params for {count} prompts", "sampling_params"
            )
        return list(params)
