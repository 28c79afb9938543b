"""The offline Engine: the scheduler loop, in-process, behind a `generate` call.

    engine = radixserve.Engine()                       # the embedded SmolLM2
    out = engine.generate("The capital of France is", {"max_new_tokens": 8, "temperature": 0})
    out["text"], out["output_ids"], out["meta_info"]["cached_tokens"]

It runs the same `Scheduler` as the server's scheduler process, so batching, chunked prefill,
radix-cache sharing and eviction behave the same; only the transport is missing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from ...utils.gc_tuning import freeze_startup_objects
from ..config.server_args import ServerArgs
from ..detokenizer.incremental import IncrementalDetokenizer
from ..server.output import RequestOutputBuilder
from ..server.request_builder import InvalidRequestError, RequestBuilder
from ..wire.messages import FinishReason, GenerateReq, TokenOut
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
        self._detokenizers: dict[str, IncrementalDetokenizer] = {}

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
        for rid in list(self.scheduler.requests):
            self.scheduler.abort(rid, "engine shut down")
        self.scheduler.step()
        stop_workers = getattr(self.state.runner, "shutdown", None)  # tensor-parallel ranks
        if stop_workers is not None:
            stop_workers()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- the loop ------------------------------------------------------------------------------

    def _run(self, reqs: list[GenerateReq]) -> list[dict[str, Any]]:
        builders = {r.rid: self._output_builder(r) for r in reqs}
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
            for rid in pending:
                self.scheduler.abort(rid, "caller interrupted")
            self.scheduler.step()
            raise
        return [builders[r.rid].result() for r in reqs]

    def _stream(self, req: GenerateReq) -> Iterator[dict[str, Any]]:
        builder = self._output_builder(req)
        self.scheduler.add_request(req)
        try:
            while not builder.finished:
                for out in self._step():
                    if out.rid == req.rid:
                        delta = self._feed(builder, out)
                        yield builder.result(text=delta)
        finally:
            if not builder.finished:
                self.scheduler.abort(req.rid, "stream closed")
                self.scheduler.step()

    def _step(self) -> list[TokenOut]:
        if not self.scheduler.has_work:
            raise RuntimeError("scheduler went idle with requests still pending")
        return self.scheduler.step()

    def _feed(self, builder: RequestOutputBuilder, out: TokenOut) -> str:
        detokenizer = self._detokenizers[out.rid]
        step = detokenizer.add(out.new_token_ids, final=out.finish is not None)
        if step.matched_stop is not None:
            # A stop string ends the request here, whatever the scheduler decided.
            out.finish = FinishReason("stop", matched=step.matched_stop)
            self.scheduler.finish_externally(out.rid, out.finish)
        builder.add(step.delta, out)
        if builder.finished:
            del self._detokenizers[out.rid]
        return step.delta

    # --- inputs --------------------------------------------------------------------------------

    def _output_builder(self, req: GenerateReq) -> RequestOutputBuilder:
        self._detokenizers[req.rid] = IncrementalDetokenizer(
            self.tokenizer,
            stop_strings=req.sampling.stop_strings(),
            skip_special_tokens=req.sampling.skip_special_tokens,
            spaces_between_special_tokens=req.sampling.spaces_between_special_tokens,
        )
        return RequestOutputBuilder(req)

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
