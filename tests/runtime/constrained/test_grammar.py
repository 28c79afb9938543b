"""Grammar compilation and matchers on the SmolLM2 tokenizer (no model needed)."""

from __future__ import annotations

import json

import pytest
import torch

from radixserve.runtime.constrained.grammar import GrammarError, compile_grammar
from radixserve.runtime.constrained.matcher import GrammarBackend
from radixserve.runtime.wire.sampling_params import SamplingParams, SamplingParamsError
from tests.runtime.smollm2 import smollm2_tokenizer

VOCAB = 49152
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def backend() -> GrammarBackend:
    tokenizer = smollm2_tokenizer()
    return GrammarBackend(lambda: tokenizer, VOCAB, [tokenizer.eos_token_id])


def allowed_ids(mask: torch.Tensor) -> list[int]:
    bits = (mask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.view(-1).nonzero().flatten().tolist()


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("regex", "a[b", "unclosed character class"),
        ("regex", "   ", "must not be empty"),
        ("json_schema", "{not json", "invalid json_schema"),
        ("json_schema", "[1, 2]", "a JSON schema is an object"),
        ("ebnf", 'root ::= "a" (', "invalid ebnf"),
        ("lark", "start: x", "unknown grammar kind"),
    ],
)
def test_bad_grammars_name_their_field(kind: str, text: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message) as error:
        compile_grammar(kind, text)
    assert error.value.field == kind


def test_sampling_params_validate_the_grammar() -> None:
    SamplingParams(json_schema=json.dumps(PERSON)).validate()
    SamplingParams(ebnf='root ::= "yes" | "no"').validate()
    with pytest.raises(SamplingParamsError, match="at most one of regex, json_schema, ebnf"):
        SamplingParams(regex="a+", ebnf='root ::= "a"').validate()
    with pytest.raises(SamplingParamsError, match="invalid regex"):
        SamplingParams(regex="(unclosed").validate()
    assert SamplingParams(regex="a+").grammar == ("regex", "a+")
    as_object = SamplingParams(json_schema=PERSON)  # the schema as an object, not its text
    as_object.validate()
    assert as_object.grammar is not None and json.loads(as_object.grammar[1]) == PERSON
    assert SamplingParams().grammar is None


def test_regex_mask_allows_only_prefixes_of_the_language(backend: GrammarBackend) -> None:
    tokenizer = smollm2_tokenizer()
    matcher = backend.matcher("regex", "(yes|no)")
    allowed = allowed_ids(matcher.allowed_tokens_bitmask())
    assert allowed, "some token must be allowed"
    for token in allowed:
        text = tokenizer.decode([token])
        assert "yes".startswith(text) or "no".startswith(text), (token, text)
    yes = tokenizer.encode("yes", add_special_tokens=False)
    for token in yes:
        assert not matcher.is_finished
        assert matcher.accept(token)
    assert matcher.is_finished
    assert allowed_ids(matcher.allowed_tokens_bitmask()) == [tokenizer.eos_token_id]


def test_forbidden_token_is_refused(backend: GrammarBackend) -> None:
    tokenizer = smollm2_tokenizer()
    matcher = backend.matcher("regex", "[0-9]+")
    assert not matcher.accept(tokenizer.encode("hello", add_special_tokens=False)[0])
    assert matcher.error is not None


def test_json_schema_forces_the_keys(backend: GrammarBackend) -> None:
    tokenizer = smollm2_tokenizer()
    matcher = backend.matcher("json_schema", json.dumps(PERSON))
    assert matcher.accept(tokenizer.encode("{", add_special_tokens=False)[0])
    forced = matcher.forced_tokens()
    # The key is forced; where the value's quote merges with what follows, a choice remains.
    assert tokenizer.decode(forced).startswith('"name":')
    assert matcher.accept_forced(forced)
    assert matcher.forced_tokens() == []
    assert len(allowed_ids(matcher.allowed_tokens_bitmask())) > 1


def test_matchers_are_independent(backend: GrammarBackend) -> None:
    tokenizer = smollm2_tokenizer()
    first = backend.matcher("regex", "(yes|no)")
    second = backend.matcher("regex", "(yes|no)")
    for token in tokenizer.encode("no", add_special_tokens=False):
        assert first.accept(token)
    assert first.is_finished and not second.is_finished


def test_batched_masks_equal_one_at_a_time(backend: GrammarBackend) -> None:
    tokenizer = smollm2_tokenizer()
    matchers = [
        backend.matcher("json_schema", json.dumps(PERSON)),
        backend.matcher("regex", "(yes|no)"),
        backend.matcher("regex", "[0-9]+"),
    ]
    assert matchers[0].accept(tokenizer.encode("{", add_special_tokens=False)[0])
    assert matchers[2].accept(tokenizer.encode("7", add_special_tokens=False)[0])
    batched = backend.allowed_tokens_bitmasks(matchers)
    assert batched.shape == (3, -(-VOCAB // 32)) and batched.dtype == torch.int32
    for row, matcher in enumerate(matchers):
        assert torch.equal(batched[row], matcher.allowed_tokens_bitmask())


def test_draft_bitmasks_follow_the_drafts_and_restore_the_state(backend: GrammarBackend) -> None:
    tokenizer = smollm2_tokenizer()
    drafts = tokenizer.encode('{"name": "Ann', add_special_tokens=False)
    matcher = backend.matcher("json_schema", json.dumps(PERSON))
    assert matcher.valid_prefix_len(drafts) == len(drafts)
    assert matcher.valid_prefix_len(tokenizer.encode("hello", add_special_tokens=False)) == 0
    before = matcher.allowed_tokens_bitmask()
    rows = matcher.draft_bitmasks(drafts)
    assert rows.shape[0] == len(drafts) + 1
    assert torch.equal(matcher.allowed_tokens_bitmask(), before)  # rolled back
    stepper = backend.matcher("json_schema", json.dumps(PERSON))
    for row, token in enumerate([*drafts, None]):
        assert torch.equal(rows[row], stepper.allowed_tokens_bitmask()), row
        if token is not None:
            assert stepper.accept(token)
