"""The DSL's expressions: what a program appends to its state with `s += ...`.

Expressions are inert values; the state's executor interprets them in order on its own thread.
They compose with `+`, so `s += "Q: " + rs.gen("a")` appends a list of two expressions.
Constructor names and arguments follow SGLang's frontend language (`sglang.lang.ir` and
`sglang.api`), so are the `REGEX_*` constants.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .choices import ChoicesMethod, token_length_normalized

ROLES = ("system", "user", "assistant")

# The regexes `gen(dtype=...)` generates under: SGLang's, character for character, so programs
# that build bigger regexes from them (`REGEX_STR + ","`) constrain the same text.
REGEX_INT = r"[-+]?[0-9]+[ \n]*"
REGEX_FLOAT = r"[-+]?[0-9]*\.?[0-9]+[ \n]*"
REGEX_BOOL = r"(True|False)"
REGEX_STR = r"\"[\w\d\s]*\""
DTYPE_REGEX: dict[type, str] = {
    int: REGEX_INT,
    float: REGEX_FLOAT,
    bool: REGEX_BOOL,
    str: REGEX_STR,
}
# A number's regex allows trailing blanks, so its generation also stops at the first one (the
# stop string is not part of the value), as SGLang's endpoint does.
DTYPE_STOP: dict[type, tuple[str, ...]] = {int: (" ", "\n"), float: (" ", "\n")}


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
    extra_stop: tuple[str, ...] = ()  # added to the resolved stop strings (dtype numbers)


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


@dataclass(slots=True, eq=False)
class VarScopeBegin(Expr):
    """`with s.var_scope(name):` opens here; the text appended until its end becomes `name`."""

    name: str


@dataclass(slots=True, eq=False)
class VarScopeEnd(Expr):
    name: str


@dataclass(slots=True, eq=False)
class SetVar(Expr):
    """`s[name] = value`: in the state's order, so it lands after what was appended before."""

    name: str
    value: Any


def dtype_regex(dtype: type | str, regex: str | None) -> tuple[str, tuple[str, ...]]:
    """(regex, extra stop strings) of `gen(dtype=...)`."""
    if regex is not None:
        raise ValueError("gen() takes `dtype` or `regex`, not both")
    by_name = {t.__name__: t for t in DTYPE_REGEX}
    key = by_name.get(dtype) if isinstance(dtype, str) else dtype
    if key not in DTYPE_REGEX:
        raise ValueError(f"gen(dtype=...) takes int, float, bool or str, got {dtype!r}")
    return DTYPE_REGEX[key], DTYPE_STOP.get(key, ())


def to_expr(value: object) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, str):
        return Text(value)
    raise TypeError(
        f"a program appends strings or DSL expressions, not {type(value).__name__}; "
        "convert it with str() first"
    )


def gen(
    name: str | None = None,
    max_tokens: int | None = None,
    min_tokens: int | None = None,
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
    return_logprob: bool | None = None,
    top_logprobs_num: int | None = None,
    choices: Sequence[str] | None = None,
    choices_method: ChoicesMethod | None = None,
    regex: str | None = None,
    json_schema: str | dict[str, Any] | None = None,
    ebnf: str | None = None,
    dtype: type | str | None = None,
) -> Expr:
    """Generates into variable `name`; arguments left None take the program's run() defaults.

    With `choices`, this is `select(name, choices, temperature, choices_method)`. `regex`,
    `json_schema` (a dict or its JSON text) or `ebnf` constrain the generated text to a grammar
    (structured output); `dtype` (int, float, bool or str, or their names) generates under
    `REGEX_INT`/`REGEX_FLOAT`/`REGEX_BOOL`/`REGEX_STR`, and a number stops at a blank.
    """
    if choices:
        return select(
            name,
            choices,
            temperature=0.0 if temperature is None else temperature,
            choices_method=choices_method or token_length_normalized,
        )
    extra_stop: tuple[str, ...] = ()
    if dtype is not None:
        regex, extra_stop = dtype_regex(dtype, regex)
    given = {
        "max_new_tokens": max_tokens,
        "min_new_tokens": min_tokens,
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
    top_n = top_logprobs_num or 0
    return Gen(name, sampling, bool(return_logprob) or top_n > 0, top_n, extra_stop)


def gen_int(name: str | None = None, **kwargs: Any) -> Expr:
    """`gen(name, dtype=int, ...)`."""
    return gen(name, dtype=int, **kwargs)


def gen_string(name: str | None = None, **kwargs: Any) -> Expr:
    """`gen(name, dtype=str, ...)`: a double-quoted string of word characters and blanks."""
    return gen(name, dtype=str, **kwargs)


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
    if not isinstance(choices_method, ChoicesMethod):
        raise TypeError(
            "choices_method takes rs.token_length_normalized, rs.greedy_token_selection, "
            f"rs.unconditional_likelihood_normalized or rs.joint_likelihood, not {choices_method!r}"
        )
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
    """Variable names an expression will set (so readers can wait for them before they exist).
    A var scope's name counts at its beginning: readers wait until the scope has ended."""
    kinds = (Gen, Select, VarScopeBegin, SetVar)
    return [e.name for e in expr.flatten() if isinstance(e, kinds) and e.name]
