"""Sampling parameters of one request (SGLang's names and defaults), validated at the edge."""

from __future__ import annotations

from collections.abc import Collection

import msgspec


class SamplingParamsError(ValueError):
    """A sampling parameter is out of range; the message names the field and the value."""


class SamplingParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # (0, 1]
    top_k: int = -1  # -1 or 0 = disabled
    min_p: float = 0.0  # [0, 1]
    repetition_penalty: float = 1.0  # HF semantics over prompt + output tokens
    frequency_penalty: float = 0.0  # OpenAI semantics over output tokens
    presence_penalty: float = 0.0
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    n: int = 1

    def validate(self, vocab_size: int | None = None) -> None:
        checks: list[tuple[bool, str]] = [
            (self.max_new_tokens >= 0, f"max_new_tokens must be >= 0, got {self.max_new_tokens}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= -1, f"top_k must be -1 (disabled) or >= 0, got {self.top_k}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (
                self.repetition_penalty > 0,
                f"repetition_penalty must be > 0, got {self.repetition_penalty}",
            ),
            (
                -2 <= self.frequency_penalty <= 2,
                f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}",
            ),
            (
                -2 <= self.presence_penalty <= 2,
                f"presence_penalty must be in [-2, 2], got {self.presence_penalty}",
            ),
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (all(self.stop_strings()), "stop strings must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise SamplingParamsError(message)
        if self.stop_token_ids and vocab_size is not None:
            bad = [t for t in self.stop_token_ids if not 0 <= t < vocab_size]
            if bad:
                raise SamplingParamsError(
                    f"stop_token_ids {bad} are outside the vocabulary [0, {vocab_size})"
                )

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def uses_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def check_stop_token(params: SamplingParams, token_id: int, eos_token_ids: Collection[int]) -> bool:
    """True when `token_id` ends the request: an EOS (unless ignored) or a stop token id."""
    if not params.ignore_eos and token_id in eos_token_ids:
        return True
    return bool(params.stop_token_ids) and token_id in params.stop_token_ids  # type: ignore[operator]
