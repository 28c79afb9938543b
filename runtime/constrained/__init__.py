"""Structured outputs: grammars (regex, JSON schema, EBNF) that constrain what a request samples.

`grammar.py` turns a request's grammar fields into an llguidance matcher per request;
`bitmask.py` applies the matcher's allowed-token bitmask to a batch of logits (torch, any device).
"""

from radixserve.runtime.constrained.bitmask import apply_token_bitmask, bitmask_words
from radixserve.runtime.constrained.grammar import (
    GRAMMAR_KINDS,
    GrammarBackend,
    GrammarError,
    GrammarMatcher,
    compile_grammar,
)

__all__ = [
    "GRAMMAR_KINDS",
    "GrammarBackend",
    "GrammarError",
    "GrammarMatcher",
    "apply_token_bitmask",
    "bitmask_words",
    "compile_grammar",
]
