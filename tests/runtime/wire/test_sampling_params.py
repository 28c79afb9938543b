"""SamplingParams: SGLang defaults, decoding, validation messages, stop helpers."""

from __future__ import annotations

import math

import msgspec
import pytest

from radixserve.runtime.wire.sampling_params import (
    SamplingParams,
    SamplingParamsError,
    check_stop_token,
)


def test_defaults_are_sglangs() -> None:
    p = SamplingParams()
    assert (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.min_p) == (128, 1.0, 1.0, -1, 0.0)
    assert (p.repetition_penalty, p.frequency_penalty, p.presence_penalty) == (1.0, 0.0, 0.0)
    assert (p.stop, p.stop_token_ids, p.ignore_eos, p.seed, p.n) == (None, None, False, None, 1)
    assert p.skip_special_tokens and p.spaces_between_special_tokens
    p.validate(vocab_size=10)


def test_decodes_from_json_and_rejects_unknown_fields() -> None:
    p = msgspec.json.decode(b'{"temperature": 0, "stop": "x", "seed": 7}', type=SamplingParams)
    assert p.is_greedy and p.stop_strings() == ["x"] and p.seed == 7
    with pytest.raises(msgspec.ValidationError, match="bogus"):
        msgspec.json.decode(b'{"bogus": 1}', type=SamplingParams)
    assert msgspec.json.decode(msgspec.json.encode(p), type=SamplingParams) == p


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_new_tokens", -1, r"^max_new_tokens must be >= 0, got -1$"),
        ("temperature", -0.1, r"^temperature must be >= 0, got -0.1$"),
        ("top_p", 0.0, r"^top_p must be in \(0, 1\], got 0.0$"),
        ("top_p", 1.5, r"^top_p must be in \(0, 1\], got 1.5$"),
        ("top_k", -2, r"^top_k must be -1 or 0 \(disabled\) or >= 1, got -2$"),
        ("min_p", -0.5, r"^min_p must be in \[0, 1\], got -0.5$"),
        ("min_p", 1.5, r"^min_p must be in \[0, 1\], got 1.5$"),
        ("repetition_penalty", 0.0, r"^repetition_penalty must be > 0, got 0.0$"),
        ("frequency_penalty", 3.0, r"^frequency_penalty must be in \[-2.0, 2.0\], got 3.0$"),
        ("presence_penalty", -2.5, r"^presence_penalty must be in \[-2.0, 2.0\], got -2.5$"),
        ("n", 0, r"^n must be >= 1, got 0$"),
        ("stop", "", r"^stop strings must not be empty, got ''$"),
        ("stop", ["ok", ""], r"^stop strings must not be empty, got \['ok', ''\]$"),
        ("stop_token_ids", [5, 100, 3], r"^stop_token_ids must be in \[0, 50\), got \[100\]$"),
        ("stop_token_ids", [-1], r"^stop_token_ids must be in \[0, 50\), got \[-1\]$"),
        ("temperature", math.nan, r"^temperature must be a finite number, got nan$"),
        ("top_p", math.inf, r"^top_p must be a finite number, got inf$"),
        ("temperature", "hot", r"Expected `float`, got `str` - at `\$.temperature`"),
        ("top_k", 2.5, r"Expected `int`, got `float` - at `\$.top_k`"),
        ("max_new_tokens", True, r"Expected `int`, got `bool` - at `\$.max_new_tokens`"),
        ("stop", ["a", 3], r"Expected `str`, got `int` - at `\$.stop\[1\]`"),
    ],
)
def test_bad_params_raise_errors_naming_field_and_value(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(SamplingParamsError, match=message) as info:
        SamplingParams(**{field: value}).validate(vocab_size=50)
    assert isinstance(info.value, ValueError)


def test_stop_token_ids_without_a_vocabulary_only_need_to_be_non_negative() -> None:
    SamplingParams(stop_token_ids=[10**6]).validate()
    with pytest.raises(SamplingParamsError, match=r"^stop_token_ids must be >= 0, got \[-3\]$"):
        SamplingParams(stop_token_ids=[1, -3]).validate()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=0, temperature=0.0, top_p=1e-9, top_k=0, min_p=1.0),
        SamplingParams(top_k=1, repetition_penalty=1e-3, frequency_penalty=-2, presence_penalty=2),
        SamplingParams(stop=["\n\n", "END"], stop_token_ids=[0, 49], n=4, seed=-(2**70)),
        SamplingParams(temperature=100.0, top_k=10**6),  # top_k above V is clamped, not an error
    ],
)
def test_edge_values_are_accepted(params: SamplingParams) -> None:
    params.validate(vocab_size=50)


def test_is_greedy() -> None:
    assert SamplingParams(temperature=0).is_greedy
    assert SamplingParams(temperature=1e-7).is_greedy  # below GREEDY_TEMPERATURE
    assert SamplingParams(top_k=1, temperature=0.8).is_greedy
    assert not SamplingParams(temperature=1e-3).is_greedy
    assert not SamplingParams(top_k=2).is_greedy


def test_uses_penalties() -> None:
    assert not SamplingParams().uses_penalties
    assert SamplingParams(repetition_penalty=1.1).uses_penalties
    assert SamplingParams(frequency_penalty=-0.1).uses_penalties
    assert SamplingParams(presence_penalty=0.5).uses_penalties


def test_stop_strings_normalize_to_a_list() -> None:
    assert SamplingParams().stop_strings() == []
    assert SamplingParams(stop="a").stop_strings() == ["a"]
    assert SamplingParams(stop=["a", "b"]).stop_strings() == ["a", "b"]


def test_check_stop_token() -> None:
    eos = {2, 7}
    assert check_stop_token(SamplingParams(), 2, eos)
    assert check_stop_token(SamplingParams(), 7, eos)
    assert not check_stop_token(SamplingParams(), 3, eos)
    assert not check_stop_token(SamplingParams(ignore_eos=True), 2, eos)
    assert check_stop_token(SamplingParams(ignore_eos=True, stop_token_ids=[2]), 2, eos)
    assert check_stop_token(SamplingParams(stop_token_ids=[9]), 9, eos)
    assert not check_stop_token(SamplingParams(stop_token_ids=[]), 9, ())
