"""`sglang.lang.choices`: the ways `select` picks a choice."""

from __future__ import annotations

from ..frontend_lang.choices import (
    greedy_token_selection,
    joint_likelihood,
    token_length_normalized,
    unconditional_likelihood_normalized,
)

__all__ = [
    "greedy_token_selection",
    "joint_likelihood",
    "token_length_normalized",
    "unconditional_likelihood_normalized",
]
