"""Sampling parameters of one request (SGLang's names and defaults), validated at the edge.

`validate` is the only gate: the scheduler and the sampler trust a validated `SamplingParams`,
so every message here names the field and the value the client sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

import msgspec

# Temperatures below this sample greedily: dividing logits by a smaller number overflows float32
# for ordinary logit magnitudes, and the limit of softmax(x / T) as T -> 0 is the argmax anyway.
GREEDY_TEMPERATURE = 1e-6
# OpenAI's documented range for frequency_penalty and presence_penalty.
MAX_ABS_ADDITIVE_PENALTY = 2.0


class SamplingParamsError(ValueError):
    """A sampling parameter is out of range; the message names the field and the value."""


class SamplingParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # EOS and stop_token_ids are not sampled before this many tokens
    temperature: float = 1.0  # 0 (or below GREEDY_TEMPERATURE) = greedy
    top_p: float = 1.0  # (0, 1]
    top_k: int = -1  # -1 or 0 = disabled, else >= 1
    min_p: float = 0.0  # [0, 1]
    repetition_penalty: float = 1.0  # > 0; HF semantics over prompt + output tokens
    frequency_penalty: float = 0.0  # [-2, 2]; OpenAI semantics over output tokens
    presence_penalty: float = 0.0  # [-2, 2]
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None  # any integer; reduced modulo 2**64
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    n: int = 1
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit, in [-100, 100]
    # Structured output: at most one grammar the generated text must follow (SGLang's names).
    regex: str | None = None
    json_schema: str | dict[str, Any] | None = None  # a JSON schema (an object or its JSON text)
    ebnf: str | None = None  # GBNF (llama.cpp's EBNF) or Lark

    def validate(self, vocab_size: int | None = None) -> None:
        """Raises SamplingParamsError naming the first bad field; returns None when all is well."""
        self._check_types()
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "repetition_penalty",
            "frequency_penalty",
            "presence_penalty",
        ):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise SamplingParamsError(f"{name} must be a finite number, got {value}")
        limit = MAX_ABS_ADDITIVE_PENALTY
        checks = (
            (self.max_new_tokens >= 0, f"max_new_tokens must be >= 0, got {self.max_new_tokens}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (
                self.top_k >= -1,
                f"top_k must be -1 or 0 (disabled) or >= 1, got {self.top_k}",
            ),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (
                self.repetition_penalty > 0,
                f"repetition_penalty must be > 0, got {self.repetition_penalty}",
            ),
            (
                -limit <= self.frequency_penalty <= limit,
                f"frequency_penalty must be in [-{limit}, {limit}], got {self.frequency_penalty}",
            ),
            (
                -limit <= self.presence_penalty <= limit,
                f"presence_penalty must be in [-{limit}, {limit}], got {self.presence_penalty}",
            ),
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (
                0 <= self.min_new_tokens <= self.max_new_tokens,
                f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], "
                f"got {self.min_new_tokens}",
            ),
            (all(self.stop_strings()), f"stop strings must not be empty, got {self.stop!r}"),
        )
        for ok, message in checks:
            if not ok:
                raise SamplingParamsError(message)
        self._check_stop_token_ids(vocab_size)
        self._check_logit_bias(vocab_size)
        self._check_grammar()

    def _check_types(self) -> None:
        # msgspec checks types when it decodes JSON, but not when Python code builds the struct
        # directly (the offline Engine accepts SamplingParams objects); one round trip through
        # builtins gives both paths the same checks and the same "at `$.field`" messages.
        try:
            msgspec.convert(msgspec.to_builtins(self), type(self))
        except (msgspec.ValidationError, TypeError) as exc:
            raise SamplingParamsError(f"invalid sampling params: {exc}") from exc

    def _check_stop_token_ids(self, vocab_size: int | None) -> None:
        check_token_ids("stop_token_ids", self.stop_token_ids or (), vocab_size)

    def _check_logit_bias(self, vocab_size: int | None) -> None:
        if not self.logit_bias:
            return
        check_token_ids("logit_bias token ids", self.logit_bias, vocab_size)
        bad = {t: v for t, v in self.logit_bias.items() if not -100 <= v <= 100}
        if bad:
            raise SamplingParamsError(f"logit_bias values must be in [-100, 100], got {bad}")

    def _check_grammar(self) -> None:
        given = [kind for kind, text in self._grammar_fields() if text is not None]
        if len(given) > 1:
            raise SamplingParamsError(f"set at most one of regex, json_schema, ebnf; got {given}")
        grammar = self.grammar
        if grammar is None:
            return
        from ..constrained.grammar import GrammarError, compile_grammar

        try:
            compile_grammar(*grammar)
        except GrammarError as exc:
            raise SamplingParamsError(str(exc)) from exc

    def _grammar_fields(self) -> tuple[tuple[str, str | dict[str, Any] | None], ...]:
        return (("regex", self.regex), ("json_schema", self.json_schema), ("ebnf", self.ebnf))

    @property
    def grammar(self) -> tuple[str, str] | None:
        """(kind, text) of the grammar the output must follow, or None."""
        for kind, text in self._grammar_fields():
            if isinstance(text, dict):
                return kind, json.dumps(text)  # key order kept: it is the output order
            if text is not None:
                return kind, text
        return None

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1

    @property
    def uses_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )

    def stop_strings(self) -> list[str]:
        """`stop` as a list: None -> [], "x" -> ["x"]."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def check_token_ids(name: str, token_ids: Collection[int], vocab_size: int | None) -> None:
    """Raises SamplingParamsError naming `name` when an id lies outside the vocabulary."""
    upper = vocab_size if vocab_size is not None else math.inf
    bad = [t for t in token_ids if not 0 <= t < upper]
    if bad:
        where = f"in [0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise SamplingParamsError(f"{name} must be {where}, got {bad}")


def check_stop_token(params: SamplingParams, token_id: int, eos_token_ids: Collection[int]) -> bool:
    """True when `token_id` ends the request: an EOS (unless ignore_eos) or a stop token id."""
    if not params.ignore_eos and token_id in eos_token_ids:
        return True
    return params.stop_token_ids is not None and token_id in params.stop_token_ids
