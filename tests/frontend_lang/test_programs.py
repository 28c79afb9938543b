"""Every DSL primitive against a live server on the embedded SmolLM2 (no mocks)."""

from __future__ import annotations

import httpx
import pytest

import radixserve as rs
from radixserve.frontend_lang.backend.runtime import free_port

pytestmark = pytest.mark.slow


@rs.function
def capital(s, country):
    s += f"The capital of {country} is" + rs.gen("city", max_tokens=3, stop=".")


def test_gen_captures_and_appends(runtime: rs.Runtime) -> None:
    state = capital.run(country="France", temperature=0)
    assert state["city"].strip() == "Paris"
    assert state.text() == "The capital of France is" + state["city"]
    meta = state.get_meta_info("city")
    assert meta["finish_reason"]["type"] in ("stop", "length") and meta["prompt_tokens"] > 0


def test_connect_to_a_running_server(runtime: rs.Runtime) -> None:
    with rs.connect(runtime.url) as backend:
        state = capital.run(country="France", temperature=0, backend=backend)
        assert state["city"].strip() == "Paris"
        assert backend.model_info["model_path"]


@rs.function
def two_turns(s, first, second):
    s += rs.system("You are a helpful assistant. Answer in a few words.")
    s += rs.user(first)
    s += rs.assistant(rs.gen("a1", max_tokens=8))
    s += rs.user(second)
    s += rs.assistant(rs.gen("a2", max_tokens=8))


def test_multi_turn_chat_reuses_the_conversation(runtime: rs.Runtime) -> None:
    state = two_turns.run(
        first="What is the capital of France?",
        second="And what is the capital of Italy?",
        temperature=0,
    )
    messages = state.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == state["a1"] and "Paris" in state["a1"]
    assert state.text().startswith("<|im_start|>system\nYou are a helpful assistant.")
    assert state.text().endswith("<|im_start|>assistant\n" + state["a2"] + "<|im_end|>\n")
    # The second call's prompt starts with the whole first call: the radix cache has it.
    first, second = state.get_meta_info("a1"), state.get_meta_info("a2")
    assert second["cached_tokens"] >= first["prompt_tokens"] - 16  # whole pages only


@rs.function
def pick(s, prompt, choices):
    s += prompt + rs.select("answer", choices)


def test_select_by_logprobs(runtime: rs.Runtime) -> None:
    choices = ["London", "Paris", "Berlin"]
    state = pick.run(prompt="The capital of France is ", choices=choices)
    # The prompt ends in a space, so " Paris" would be one token: the boundary token is scored.
    assert state["answer"] == "Paris" and state.text() == "The capital of France is Paris"
    meta = state.get_meta_info("answer")
    assert meta["choice_index"] == 1 and len(meta["scores"]) == 3
    state = pick.run(prompt="1, 2, 3, 4,", choices=[" 9", " 5", " five hundred"])
    assert state["answer"] == " 5"


@rs.function
def branches(s, n):
    s += rs.system("You write one short sentence about animals.")
    s += rs.user("Write a sentence about a cat.")
    forks = s.fork(n)
    for i, fork in enumerate(forks):
        fork += rs.assistant(rs.gen("sentence", max_tokens=6, temperature=1.0, seed=i))
    forks.join()
    s += rs.assistant("Done.")
    return forks.prefix_meta


def test_fork_join_shares_the_prefix(runtime: rs.Runtime) -> None:
    state = branches.run(n=3)
    sentences = state["sentence"]
    assert isinstance(sentences, list) and len(sentences) == 3
    assert all(isinstance(x, str) and x for x in sentences)
    prefix_tokens = state.ret_value["prompt_tokens"]
    for meta in state.get_meta_info("sentence"):
        assert meta["cached_tokens"] >= prefix_tokens - 16  # computed once, before the branches
    assert state.text().endswith("<|im_start|>assistant\nDone.<|im_end|>\n")
    assert len(state.messages()) == 3  # the branches' turns stay in the branches


def test_run_batch_with_a_failing_entry(runtime: rs.Runtime) -> None:
    @rs.function
    def short(s, country, tokens):
        s += f"The capital of {country} is" + rs.gen("city", max_tokens=tokens, stop=".")

    batch = [
        {"country": "France", "tokens": 3},
        {"country": "Italy", "tokens": -1},
        {"country": "Spain", "tokens": 3},
    ]
    states = short.run_batch(batch, temperature=0, progress_bar=True)
    assert states[0]["city"].strip() == "Paris" and states[2]["city"].strip() == "Madrid"
    assert states[0].error() is None and states[2].error() is None
    error = states[1].error()
    assert isinstance(error, rs.BackendError) and error.status_code == 400
    assert "max_new_tokens must be >= 0" in str(error)


def test_streaming_yields_text_as_it_is_generated(runtime: rs.Runtime) -> None:
    @rs.function
    def story(s):
        s += rs.user("Count from one to five in words.")
        s += rs.assistant(rs.gen("count", max_tokens=8, ignore_eos=True))

    state = story.run(stream=True, temperature=0)
    pieces = list(state.text_iter())
    assert "".join(pieces) == state.text()
    generated = list(story.run(stream=True, temperature=0).text_iter("count"))
    assert len(generated) > 1  # several deltas, not one final blob
    assert "".join(generated) == state["count"]


def test_errors_reach_the_caller_with_the_servers_message(runtime: rs.Runtime) -> None:
    with pytest.raises(rs.BackendError, match="temperature must be >= 0") as info:
        capital.run(country="France", temperature=-1)
    assert info.value.status_code == 400
    # A backend that breaks under a program: its server is gone.
    broken = rs.RuntimeEndpoint(runtime.url)
    broken.client = httpx.Client(base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(rs.BackendError, match="cannot reach the server"):
        capital.run(country="France", backend=broken)
    with pytest.raises(rs.BackendError, match="cannot reach the server"):
        rs.RuntimeEndpoint(f"http://127.0.0.1:{free_port()}")


@rs.function
def profile(s, who):
    s += rs.user(f"Describe {who} briefly.")
    s += rs.assistant(
        "Age: "
        + rs.gen("age", regex=r"[1-9][0-9]?")
        + "\nCard: "
        + rs.gen("card", json_schema=CARD)
    )


CARD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "job": {"type": "string", "maxLength": 16},
    },
    "required": ["name", "job"],
    "additionalProperties": False,
}


def test_gen_with_regex_and_json_schema(runtime: rs.Runtime) -> None:
    import json
    import re

    state = profile.run(who="a baker", temperature=0, max_new_tokens=48)
    assert re.fullmatch(r"[1-9][0-9]?", state["age"])
    card = json.loads(state["card"])
    assert set(card) == {"name", "job"}
    assert state.get_meta_info("card")["finish_reason"]["type"] == "stop"


def test_a_runtime_that_cannot_start_says_why_and_leaves_nothing() -> None:
    with pytest.raises(RuntimeError, match="does not exist") as info:
        rs.Runtime(model_path="/nonexistent/model", startup_timeout=120)
    assert "exited with code" in str(info.value)
