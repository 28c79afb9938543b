"""The tokenizer side: turns user input into validated `GenerateReq`s.

Both the offline Engine and the HTTP server go through here, so every bad input gets the same
clear error before anything reaches the scheduler: an empty prompt, a prompt too long for the
context, token ids outside the vocabulary, bad sampling parameters, a request that could never fit
in the KV pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ..config.tokenizer import render_chat
from ..wire.messages import GenerateReq
from ..wire.sampling_params import SamplingParams, SamplingParamsError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class InvalidRequestError(ValueError):
    """A request the runtime refuses; the message says which field is wrong and why."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def parse_sampling_params(raw: SamplingParams | dict[str, Any] | None) -> SamplingParams:
    if isinstance(raw, SamplingParams):
        return raw
    try:
        return msgspec.convert(raw or {}, SamplingParams)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid sampling_params: {exc}", "sampling_params") from exc


@dataclass(slots=True)
class RequestBuilder:
    tokenizer: PreTrainedTokenizerBase
    vocab_size: int
    context_len: int
    pool_tokens: int  # the KV pool's capacity: a request needing more could never run

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise InvalidRequestError(f"prompt must be a string, got {type(text).__name__}", "text")
        return list(self.tokenizer.encode(text, add_special_tokens=True))

    @property
    def chat_template_takes_tools(self) -> bool:
        """Whether the chat template renders a `tools` argument (else we describe the tools)."""
        template = getattr(self.tokenizer, "chat_template", None)
        return isinstance(template, str) and "tools" in template

    def encode_chat(self, messages: Sequence[dict[str, Any]], **template_args: Any) -> list[int]:
        if not messages:
            raise InvalidRequestError("messages must not be empty", "messages")
        try:
            text = render_chat(self.tokenizer, list(messages), **template_args)
        except Exception as exc:  # jinja raises many kinds for a malformed conversation
            raise InvalidRequestError(f"cannot apply the chat template: {exc}", "messages") from exc
        # The template already contains any BOS token it wants.
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def build(
        self,
        rid: str,
        input_ids: Sequence[int],
        sampling: SamplingParams | dict[str, Any] | None,
        *,
        return_logprob: bool = False,
        logprob_start_len: int = -1,
        top_logprobs_num: int = 0,
        stream: bool = False,
    ) -> GenerateReq:
        params = parse_sampling_params(sampling)
        try:
            params.validate(self.vocab_size)
        except SamplingParamsError as exc:
            raise InvalidRequestError(str(exc), "sampling_params") from exc
        ids = self.check_input_ids(input_ids)
        if logprob_start_len >= len(ids) or logprob_start_len < -1:
            raise InvalidRequestError(
                f"logprob_start_len must be in [-1, {len(ids) - 1}], got {logprob_start_len}",
                "logprob_start_len",
            )
        if top_logprobs_num < 0:
            raise InvalidRequestError(
                f"top_logprobs_num must be >= 0, got {top_logprobs_num}", "top_logprobs_num"
            )
        needed = min(len(ids) + params.max_new_tokens, self.context_len)
        if needed > self.pool_tokens:
            raise InvalidRequestError(
                f"request needs up to {needed} tokens of KV cache but the pool holds "
                f"{self.pool_tokens}; lower max_new_tokens or the prompt length",
                "max_new_tokens",
            )
        return GenerateReq(
            rid=rid,
            input_ids=ids,
            sampling=params,
            return_logprob=return_logprob or logprob_start_len >= 0 or top_logprobs_num > 0,
            logprob_start_len=logprob_start_len,
            top_logprobs_num=top_logprobs_num,
            stream=stream,
        )

    def check_input_ids(self, input_ids: Sequence[int]) -> list[int]:
        if isinstance(input_ids, (str, bytes)) or not isinstance(input_ids, Sequence):
            raise InvalidRequestError("input_ids must be a list of integers", "input_ids")
        ids = list(input_ids)
        if not ids:
            raise InvalidRequestError("the prompt is empty", "input_ids")
        for position, token in enumerate(ids):
            if isinstance(token, bool) or not isinstance(token, int):
                raise InvalidRequestError(
                    f"input_ids[{position}] is {token!r}, not an integer", "input_ids"
                )
            if not 0 <= token < self.vocab_size:
                raise InvalidRequestError(
                    f"token id {token} at position {position} is outside the vocabulary "
                    f"[0, {self.vocab_size})",
                    "input_ids",
                )
        if len(ids) >= self.context_len:
            raise InvalidRequestError(
                f"the prompt has {len(ids)} tokens but the context length is {self.context_len}",
                "input_ids",
            )
        return ids
