"""How `select` picks one of its choices from the choices' token logprobs (SGLang's methods).

Every method sees, per choice, the logprobs of the tokens the choice adds after the prompt
("conditional"); `unconditional_likelihood_normalized` also needs the same tokens scored with no
prompt before them ("unconditional"), which costs the backend one more batch request.

    token_length_normalized              mean conditional logprob (SGLang's default)
    joint_likelihood                     sum of the conditional logprobs (longer choices lose)
    greedy_token_selection               compare token by token, like a greedy decode limited
                                         to the choices; a shorter choice is padded with its
                                         own mean logprob
    unconditional_likelihood_normalized  mean of (conditional - unconditional) per token: how
                                         much the prompt raises each token; the first token has
                                         no unconditional logprob and counts as 0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

METHODS = (
    "token_length_normalized",
    "joint_likelihood",
    "greedy_token_selection",
    "unconditional_likelihood_normalized",
)


@dataclass(slots=True, frozen=True)
class ChoicesMethod:
    name: str

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown choices method {self.name!r}; choose one of {METHODS}")

    @property
    def needs_unconditional(self) -> bool:
        return self.name == "unconditional_likelihood_normalized"

    def scores(
        self,
        conditional: Sequence[Sequence[float]],
        unconditional: Sequence[Sequence[float]] | None = None,
    ) -> list[float]:
        """One number per choice (higher is better); greedy selection reports the mean."""
        if self.name == "joint_likelihood":
            return [sum(lp) if lp else float("-inf") for lp in conditional]
        if self.needs_unconditional:
            if unconditional is None:
                raise ValueError(f"{self.name} needs the choices' unconditional logprobs")
            return [_gain(c, u) for c, u in zip(conditional, unconditional, strict=True)]
        return [_mean(lp) for lp in conditional]

    def pick(
        self,
        conditional: Sequence[Sequence[float]],
        unconditional: Sequence[Sequence[float]] | None = None,
    ) -> int:
        """The index of the winning choice; ties go to the earliest choice."""
        if self.name == "greedy_token_selection":
            return _greedy(conditional)
        scores = self.scores(conditional, unconditional)
        return max(range(len(scores)), key=scores.__getitem__)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("-inf")


def _gain(conditional: Sequence[float], unconditional: Sequence[float]) -> float:
    if len(conditional) != len(unconditional):
        raise ValueError(
            f"a choice has {len(conditional)} conditional but {len(unconditional)} "
            "unconditional token logprobs"
        )
    return _mean([c - u for c, u in zip(conditional, unconditional, strict=True)])


def _greedy(conditional: Sequence[Sequence[float]]) -> int:
    """Column by column over a matrix of the choices' logprobs, keep the choices that tie for
    the best value, until one is left. Rows are padded to the longest with their own mean:

        choice 0:  -0.1  -0.5  [-0.3]      <- padded with mean(-0.1, -0.5)
        choice 1:  -0.1  -0.2   -2.0
    """
    width = max((len(lp) for lp in conditional), default=0)
    matrix = [list(lp) + [_mean(lp)] * (width - len(lp)) for lp in conditional]
    alive = list(range(len(matrix)))
    for column in range(width):
        best = max(matrix[i][column] for i in alive)
        alive = [i for i in alive if matrix[i][column] == best]
        if len(alive) == 1:
            break
    return alive[0]


def decision_meta(
    method: ChoicesMethod,
    index: int,
    conditional: Sequence[Sequence[float]],
    unconditional: Sequence[Sequence[float]] | None,
    prompt_meta: dict[str, Any],
    choice_metas: list[dict[str, Any]],
) -> dict[str, Any]:
    """A select's meta_info: ours, plus the keys SGLang's select reports."""
    meta: dict[str, Any] = {
        "choice_index": index,
        "choices_method": method.name,
        "scores": method.scores(conditional, unconditional),
        "token_logprobs": [list(lp) for lp in conditional],
        "prompt_meta": prompt_meta,
        "choice_metas": choice_metas,
        "cached_tokens": prompt_meta.get("cached_tokens", 0),
        "prompt_tokens": prompt_meta.get("prompt_tokens", 0),
        # SGLang's names
        "normalized_prompt_logprobs": [_mean(lp) for lp in conditional],
        "input_token_logprobs": [m.get("input_token_logprobs") for m in choice_metas],
        "output_token_logprobs": [m.get("output_token_logprobs", []) for m in choice_metas],
    }
    if unconditional is not None:
        meta["unconditional_token_logprobs"] = [list(lp) for lp in unconditional]
        meta["normalized_unconditional_prompt_logprobs"] = [
            _gain(c, u) for c, u in zip(conditional, unconditional, strict=True)
        ]
    return meta


token_length_normalized = ChoicesMethod("token_length_normalized")
joint_likelihood = ChoicesMethod("joint_likelihood")
greedy_token_selection = ChoicesMethod("greedy_token_selection")
unconditional_likelihood_normalized = ChoicesMethod("unconditional_likelihood_normalized")
