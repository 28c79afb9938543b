"""Grammars for structured outputs, on llguidance.

A request may carry one of `regex`, `json_schema` or `ebnf` (SGLang's sampling-parameter names).
`compile_grammar` checks it without a tokenizer (and without torch), so the tokenizer side refuses
a bad grammar with a 400 before anything reaches the scheduler. The scheduler's matchers are in
`matcher.py`.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

GRAMMAR_KINDS = ("regex", "json_schema", "ebnf")
# JSON as a small model writes it best: one canonical spacing, no free whitespace (a model may
# otherwise emit newlines forever inside an object), so more of each object is forced.
JSON_OPTIONS: JsonCompileOptions = {
    "item_separator": ", ",
    "key_separator": ": ",
    "whitespace_flexible": False,
}


class GrammarError(ValueError):
    """A grammar that cannot be compiled; `field` is the sampling parameter that holds it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@functools.lru_cache(maxsize=512)
def compile_grammar(kind: str, text: str) -> str:
    """llguidance's form of a grammar given as `kind` (one of GRAMMAR_KINDS).

    Raises GrammarError naming the field for an unknown kind, a malformed regex, a JSON schema that
    is not a JSON object, or an EBNF/Lark grammar that does not parse. Cached: programs send the
    same schema many times.
    """
    from llguidance import LLMatcher, grammar_from

    if kind not in GRAMMAR_KINDS:
        raise GrammarError(f"unknown grammar kind {kind!r}; use one of {GRAMMAR_KINDS}", kind)
    if not text.strip():
        raise GrammarError(f"{kind} must not be empty", kind)
    try:
        if kind == "regex":
            grammar = LLMatcher.grammar_from_regex(text)
        elif kind == "json_schema":
            schema = json.loads(text)
            if not isinstance(schema, dict):
                raise ValueError(f"a JSON schema is an object, got {type(schema).__name__}")
            grammar = LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
        else:
            grammar = grammar_from("ebnf", text)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise GrammarError(f"invalid {kind}: {exc}", kind) from exc
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise GrammarError(f"invalid {kind}: {error.strip()}", kind)
    return grammar
