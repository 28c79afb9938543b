"""The official `openai` client against a real server on SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.runtime.server.http.conftest import ServerProcess

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key) as client:
        yield client


@pytest.fixture(scope="module")
def model(oai: openai.OpenAI) -> str:
    return oai.models.list().data[0].id


def test_models_lists_the_served_model(oai: openai.OpenAI, model: str) -> None:
    assert model == "SmolLM2-135M-Instruct"


def test_chat_greedy(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=10
    )
    choice = reply.choices[0]
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 10
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")


def test_chat_stream_matches_non_stream(oai: openai.OpenAI, model: str) -> None:
    whole = oai.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=4)
    chunks = list(
        oai.chat.completions.create(
            model=model,
            messages=QUESTION,
            temperature=0,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == [whole.choices[0].finish_reason]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_n_stop_and_logprobs(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(
        model=model,
        messages=QUESTION,
        n=3,
        temperature=0.8,
        seed=7,
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for choice in reply.choices:
        content = choice.logprobs.content
        assert 0 < len(content) <= 3
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
        assert all(bytes(t.bytes).decode("utf-8", "replace") == t.token for t in content)
    assert reply.usage.completion_tokens == sum(len(c.logprobs.content) for c in reply.choices)
    stopped = oai.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=8, stop=[" is"]
    )
    assert stopped.choices[0].message.content == "The capital of France"
    assert stopped.choices[0].finish_reason == "stop"


def test_completions_n_stream_and_stop(oai: openai.OpenAI, model: str) -> None:
    prompt = "The capital of France is"
    greedy = oai.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=3)
    assert greedy.choices[0].text.startswith(" Paris")
    assert greedy.choices[0].finish_reason == "length"
    pieces: dict[int, str] = {0: "", 1: ""}
    for chunk in oai.completions.create(
        model=model, prompt=[prompt, prompt], temperature=0, max_tokens=3, stream=True
    ):
        for c in chunk.choices:
            pieces[c.index] += c.text
    assert pieces == {0: greedy.choices[0].text, 1: greedy.choices[0].text}
    many = oai.completions.create(model=model, prompt=prompt, n=2, max_tokens=2, temperature=1)
    assert len(many.choices) == 2 and many.usage.prompt_tokens == greedy.usage.prompt_tokens
    stop = oai.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=3, stop=".")
    assert stop.choices[0].text == " Paris" and stop.choices[0].finish_reason == "stop"


def test_completions_token_prompts_and_logprobs(oai: openai.OpenAI, model: str) -> None:
    ids = [504, 3575, 282, 4649, 314]  # "The capital of France is"
    reply = oai.completions.create(
        model=model, prompt=[ids, ids[:3]], temperature=0, max_tokens=3, logprobs=2
    )
    first = reply.choices[0]
    assert first.text.startswith(" Paris")
    assert len(first.logprobs.tokens) == 3 and "".join(first.logprobs.tokens) == first.text
    assert first.logprobs.text_offset[0] == 0
    assert all(len(top) == 2 for top in first.logprobs.top_logprobs)
    # Greedy: the chosen token is the most likely one.
    lps = first.logprobs
    for token, lp, top in zip(lps.tokens, lps.token_logprobs, lps.top_logprobs, strict=True):
        assert max(top.values()) == pytest.approx(lp, abs=1e-4) and token in top


def test_echo_loglikelihood(oai: openai.OpenAI, model: str) -> None:
    prompt = "The capital of France is Paris"
    reply = oai.completions.create(model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    choice = reply.choices[0]
    assert choice.text == prompt
    lps = choice.logprobs
    assert len(lps.tokens) == reply.usage.prompt_tokens and reply.usage.completion_tokens == 0
    assert lps.token_logprobs[0] is None and lps.top_logprobs[0] is None
    assert all(lp <= 0 for lp in lps.token_logprobs[1:])
    assert "".join(lps.tokens) == prompt
    # " Paris" after "The capital of France is" is likely for any sensible model.
    assert lps.token_logprobs[-1] > -3
    echoed = oai.completions.create(
        model=model, prompt=prompt, max_tokens=2, echo=True, temperature=0
    )
    assert echoed.choices[0].text.startswith(prompt) and len(echoed.choices[0].text) > len(prompt)


def test_usage_reports_cached_tokens_on_repeated_prompt(oai: openai.OpenAI, model: str) -> None:
    prompt = "Here is a long story about a cat named Tom. " * 16
    first = oai.completions.create(model=model, prompt=prompt, max_tokens=1, temperature=0)
    second = oai.completions.create(model=model, prompt=prompt, max_tokens=1, temperature=0)
    assert first.usage.prompt_tokens > 150
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 32  # all but the last partial page or so
    assert cached > first.usage.prompt_tokens_details.cached_tokens


def test_errors_raise_typed_client_exceptions(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        oai.completions.create(model="no-such-model", prompt="hi", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as info:
        oai.completions.create(model=model, prompt="hi", max_tokens=-1)
    assert info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=model, messages=QUESTION, temperature=-1)
    assert info.value.body["param"] == "temperature"
    bad = openai.OpenAI(base_url=str(oai.base_url), api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_logit_bias_and_min_tokens(oai: openai.OpenAI, model: str, server: ServerProcess) -> None:
    prompt = "The capital of France is"
    with server.client() as client:
        native = {"text": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": 1}}
        first = client.post("/generate", json=native).json()["output_ids"][0]
    plain = oai.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=1)
    steered = oai.completions.create(
        model=model, prompt=prompt, temperature=0, max_tokens=1, logit_bias={str(first): -100}
    )
    assert steered.choices[0].text != plain.choices[0].text
    short = oai.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=40
    )
    n = short.usage.completion_tokens
    assert short.choices[0].finish_reason == "stop"
    longer = oai.chat.completions.create(
        model=model,
        messages=QUESTION,
        temperature=0,
        max_tokens=n + 20,
        extra_body={"min_tokens": n + 8},  # vLLM's extra field
    )
    assert longer.usage.completion_tokens >= n + 8
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        oai.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=2, logit_bias={"10": 150}
        )
