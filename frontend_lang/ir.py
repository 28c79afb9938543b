"""The DSL's expressions: what a program appends to its state with `s += ...`.

Expressions are inert values; the state's executor interprets them in order on its own thread.
They compose with `+`, so `s += "Q: " + rs.gen("a")` appends a list of two expressions.
Constructor names and arguments follow SGLang's frontend language.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


class Expr:
    """Base class of every expression; `+` builds an `ExprList`."""

    def __add__(self, other: object) -> ExprList:
        return ExprList([self, to_expr(other)])

    def __radd__(self, other: object) -> ExprList:
        return ExprList([to_expr(other), self])

    def flatten(self) -> Iterator[Expr]:
        yield self


@dataclass(slots=True, eq=False)
class ExprList(Expr):
    items: list[Expr]

    def flatten(self) -> Iterator[Expr]:
        for item in self.items:
            yield from item.flatten()


@dataclass(slots=True, eq=False)
class Text(Expr):
    text: str


@dataclass(slots=True, eq=False)
class Gen(Expr):
    """Generates text and appends it; `name` captures it as a variable."""

    name: str | None
    sampling: dict[str, Any] = field(default_factory=dict)  # server names, only those given
    return_logprob: bool = False
    top_logprobs_num: int = 0


@dataclass(slots=True, eq=False)
class Select(Expr):
    """Appends the choice with the highest score under `choices_method`."""

    name: str | None
    choices: list[str]
    choices_method: ChoicesMethod


@dataclass(slots=True, eq=False)
class RoleBegin(Expr):
    role: str


@dataclass(slots=True, eq=False)
class RoleEnd(Expr):
    role: str


@dataclass(slots=True, frozen=True)
class ChoicesMethod:
    """How `select` turns each choice's token logprobs into one score (higher wins)."""

    name: str

    def score(self, token_logprobs: Sequence[float]) -> float:
        if not token_logprobs:
            return float("-inf")
        if self.name == "token_length_normalized":
            return sum(token_logprobs) / len(token_logprobs)
        if self.name == "joint_likelihood":
            return sum(token_logprobs)
        raise ValueError(f"unknown choices method {self.name!r}")

    def pick(self, per_choice: Sequence[Sequence[float]]) -> int:
        if self.name == "greedy_token_selection":
            # Compare the first tokens, then the next ones among the tied, like a greedy decode
            # restricted to the choices; a choice that runs out of tokens loses the tie.
            alive = list(range(len(per_choice)))
            for position in range(max((len(lp) for lp in per_choice), default=0)):
                values = {
                    i: per_choice[i][position] for i in alive if position < len(per_choice[i])
                }
                if not values:
                    break
                best = max(values.values())
                alive = [i for i, v in values.items() if v == best]
                if len(alive) == 1:
                    break
            return alive[0]
        scores = [self.score(lp) for lp in per_choice]
        return max(range(len(scores)), key=scores.__getitem__)


token_length_normalized = ChoicesMethod("token_length_normalized")
joint_likelihood = ChoicesMethod("joint_likelihood")
greedy_token_selection = ChoicesMethod("greedy_token_selection")


def dtype_regex(dtype: type | str, regex: str | None) -> str:
    if regex is not None:
        raise ValueError("gen() takes `dtype` or `regex`, not both")
    by_name = {t.__name__: t for t in DTYPE_REGEX}
    key = by_name.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if key not in DTYPE_REGEX:
        raise ValueError(f"gen(dtype=...) takes int, float, bool or str, got {dtype!r}")
    return DTYPE_REGEX[key]


def to_expr(value: object) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, str):
        return Text(value)
    raise TypeError(
        f"a program appends strings or DSL expressions, not {type(value).__name__}; "
        "convert it with str() first"
    )


# `gen(dtype=...)`: the regex a value of that type is generated under (SGLang's shapes).
DTYPE_REGEX = {
    int: r"[-+]?[0-9]+",
    float: r"[-+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?",
    bool: r"(True|False)",
    str: r"\"[\w\d\s]*\"",
}


def gen(
    name: str | None = None,
    max_tokens: int | None = None,
    stop: str | list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    repetition_penalty: float | None = None,
    ignore_eos: bool | None = None,
    seed: int | None = None,
    return_logprob: bool = False,
    top_logprobs_num: int = 0,
    choices: Sequence[str] | None = None,
    choices_method: ChoicesMethod = token_length_normalized,
    regex: str | None = None,
    json_schema: str | dict[str, Any] | None = None,
    ebnf: str | None = None,
    dtype: type | str | None = None,
) -> Expr:
    """Generates into variable `name`; arguments left None take the program's run() defaults.

    With `choices`, this is `select(name, choices)`. `regex`, `json_schema` (a dict or its JSON
    text) or `ebnf` constrain the generated text to a grammar (structured output); `dtype` (int,
    float, bool or str, or their names) is shorthand for the regex of such a literal.
    """
    if choices is not None:
        return select(name, choices, choices_method=choices_method)
    if dtype is not None:
        regex = dtype_regex(dtype, regex)
    given = {
        "max_new_tokens": max_tokens,
        "stop": stop,
        "stop_token_ids": stop_token_ids,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "frequency_penalty": frequency_penalty,
        "presence_penalty": presence_penalty,
        "repetition_penalty": repetition_penalty,
        "ignore_eos": ignore_eos,
        "seed": seed,
        "regex": regex,
        "json_schema": json_schema
        if not isinstance(json_schema, dict)
        else json.dumps(json_schema),
        "ebnf": ebnf,
    }
    sampling = {k: v for k, v in given.items() if v is not None}
    return Gen(name, sampling, return_logprob or top_logprobs_num > 0, top_logprobs_num)


def select(
    name: str | None = None,
    choices: Sequence[str] | None = None,
    temperature: float = 0.0,
    choices_method: ChoicesMethod = token_length_normalized,
) -> Select:
    """Appends the most likely of `choices` given the text so far (scored, never sampled)."""
    if not choices:
        raise ValueError("select needs a non-empty list of choices")
    if temperature != 0.0:
        raise ValueError("select only supports temperature=0 (the highest-scoring choice wins)")
    bad = [c for c in choices if not isinstance(c, str) or not c]
    if bad:
        raise ValueError(f"select choices must be non-empty strings, got {bad!r}")
    return Select(name, list(choices), choices_method)


def role_block(role: str, expr: object | None) -> Expr:
    if expr is None:
        return ExprList([RoleBegin(role), RoleEnd(role)])
    return ExprList([RoleBegin(role), to_expr(expr), RoleEnd(role)])


def system(expr: object | None = None) -> Expr:
    return role_block("system", expr)


def user(expr: object | None = None) -> Expr:
    return role_block("user", expr)


def assistant(expr: object | None = None) -> Expr:
    return role_block("assistant", expr)


def system_begin() -> RoleBegin:
    return RoleBegin("system")


def system_end() -> RoleEnd:
    return RoleEnd("system")


def user_begin() -> RoleBegin:
    return RoleBegin("user")


def user_end() -> RoleEnd:
    return RoleEnd("user")


def assistant_begin() -> RoleBegin:
    return RoleBegin("assistant")


def assistant_end() -> RoleEnd:
    return RoleEnd("assistant")


def named_outputs(expr: Expr) -> list[str]:
    """Variable names an expression will set (so readers can wait for them before they exist)."""
    return [e.name for e in expr.flatten() if isinstance(e, (Gen, Select)) and e.name]
