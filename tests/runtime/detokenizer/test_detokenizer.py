"""Incremental detokenization and stop strings, with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from radixserve.runtime.detokenizer.incremental import IncrementalDetokenizer
from tests.runtime.smollm2 import smollm2_tokenizer

TEXTS = [
    "The capital of France is Paris.",
    "naïve café — déjà vu 🙂 日本語のテキスト",
    "def f(x):\n    return x ** 2  # squares\n",
    "  leading spaces and   runs   of spaces",
]


def stream(detok: IncrementalDetokenizer, ids: list[int]) -> tuple[str, list[str], str | None]:
    deltas, matched = [], None
    for i, token in enumerate(ids):
        result = detok.add([token], final=i == len(ids) - 1)
        deltas.append(result.delta)
        matched = matched or result.matched_stop
    return "".join(deltas), deltas, matched


@pytest.mark.parametrize("text", TEXTS)
def test_token_by_token_equals_whole_decode(text: str) -> None:
    tok = smollm2_tokenizer()
    ids = tok.encode(text, add_special_tokens=False)
    joined, deltas, _ = stream(IncrementalDetokenizer(tok), ids)
    assert joined == tok.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_truncates_and_never_leaks_a_partial_stop() -> None:
    tok = smollm2_tokenizer()
    ids = tok.encode("Answer: 42. END of the story", add_special_tokens=False)
    joined, deltas, matched = stream(IncrementalDetokenizer(tok, stop_strings=["END"]), ids)
    assert matched == "END"
    assert joined == "Answer: 42. "
    # No emitted prefix of the text ever ended with a proper prefix of the stop string that
    # later turned out to be the stop string.
    assert not any(d.endswith("E") or d.endswith("EN") for d in deltas)


def test_held_back_partial_stop_is_released_when_it_diverges() -> None:
    tok = smollm2_tokenizer()
    ids = tok.encode("one ST two STOP three", add_special_tokens=False)
    joined, _, matched = stream(IncrementalDetokenizer(tok, stop_strings=["STOP"]), ids)
    assert matched == "STOP"
    assert joined == "one ST two "


def test_stop_string_spanning_tokens_and_earliest_wins() -> None:
    tok = smollm2_tokenizer()
    ids = tok.encode("alpha beta gamma delta", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, stop_strings=["delta", "a be"])
    joined, _, matched = stream(detok, ids)
    assert matched == "a be" and joined == "alph"


def test_special_tokens_skipped_or_kept() -> None:
    tok = smollm2_tokenizer()
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    skipped, _, _ = stream(IncrementalDetokenizer(tok), ids)
    kept, _, _ = stream(IncrementalDetokenizer(tok, skip_special_tokens=False), ids)
    assert "<|im_start|>" not in skipped and "hi" in skipped
    assert kept.startswith("<|im_start|>")
