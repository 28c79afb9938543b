"""The interpreter against a scripted backend: ordering, roles, fork/join, errors, batching."""

from __future__ import annotations

import threading

import pytest

import radixserve as rs
from radixserve.frontend_lang.backend.base import BackendError
from radixserve.frontend_lang.executor import ProgramError
from tests.frontend_lang.fakes import FakeBackend

DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n"
)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def test_appends_travel_with_the_next_call_and_defaults_merge(backend: FakeBackend) -> None:
    @rs.function
    def program(s, topic):
        s += "A: " + topic + "\n"
        s += "B:" + rs.gen("b", max_tokens=3, stop="\n")
        s += "C:" + rs.gen("c")

    state = program.run(topic="cats", temperature=0, backend=backend)
    kinds = [c[0] for c in backend.calls]
    assert kinds == ["generate", "generate"]  # text appends make no calls of their own
    assert backend.calls[0][1] == "A: cats\nB:"
    first, second = backend.calls[0][2], backend.calls[1][2]
    assert (first["max_new_tokens"], first["stop"], first["temperature"]) == (3, "\n", 0)
    assert (second["max_new_tokens"], second["temperature"]) == (128, 0)  # run()'s defaults
    assert "stop" not in second
    assert state["b"] == "[10]"
    assert state.text() == "A: cats\nB:[10]C:[16]"


def test_roles_use_the_template_with_its_default_system(backend: FakeBackend) -> None:
    @rs.function
    def chat(s):
        s += rs.user("hi")
        s += rs.assistant(rs.gen("a"))
        with s.user():
            s += "more"

    state = chat.run(backend=backend)
    assert state.text().startswith(DEFAULT_SYSTEM + "<|im_start|>user\nhi<|im_end|>\n")
    assert backend.calls[0][1].endswith("<|im_start|>assistant\n")
    assert state.messages() == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": state["a"]},
        {"role": "user", "content": "more"},
    ]

    @rs.function
    def with_system(s):
        s += rs.system("Be brief.") + rs.user_begin() + "q" + rs.user_end()

    text = with_system.run(backend=backend).text()
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"


def test_nested_roles_are_an_error(backend: FakeBackend) -> None:
    @rs.function
    def bad(s):
        s += rs.user_begin()
        s += rs.assistant("x")

    with pytest.raises(ProgramError, match="inside the open 'user' block"):
        bad.run(backend=backend)


def test_fork_computes_the_prefix_once_then_join_gathers(backend: FakeBackend) -> None:
    @rs.function
    def branches(s):
        s += "Q:"
        forks = s.fork(3)
        forks += [f" {i}" + rs.gen("x") for i in range(3)]
        forks.join()
        s += "done"

    state = branches.run(backend=backend)
    assert backend.calls[0] == ("cache_prefix", "Q:", {})
    assert sorted(c[1] for c in backend.calls[1:]) == ["Q: 0", "Q: 1", "Q: 2"]
    assert state["x"] == ["[4]", "[4]", "[4]"]
    assert state.text() == "Q:done"
    assert len(state.get_meta_info("x")) == 3


def test_join_concate_and_append(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        s += "P"
        forks = s.fork(2)
        forks += "+" + rs.gen("y")
        forks.join("concate_and_append")

    assert program.run(backend=backend).text() == "P+[2]+[2]"


def test_select_appends_the_best_choice(backend: FakeBackend) -> None:
    @rs.function
    def pick(s):
        s += "Pick: " + rs.select("c", ["no", "maybe", "yes"])

    state = pick.run(backend=backend)
    assert state["c"] == "maybe"  # the fake scores -1/len per token
    assert state.text() == "Pick: maybe"
    assert state.get_meta_info("c")["choice_index"] == 1


def test_choices_methods() -> None:
    per_choice = [[-1.0, -0.1], [-0.5, -3.0], [-0.5, -2.0]]
    assert rs.token_length_normalized.pick(per_choice) == 0
    assert rs.greedy_token_selection.pick(per_choice) == 2
    assert rs.joint_likelihood.pick([[-1.0, -1.0], [-1.5]]) == 1


def test_run_raises_the_servers_message(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        s += "FAIL " + rs.gen("a")
        s += "after" + rs.gen("b")

    with pytest.raises(BackendError, match="temperature must be >= 0"):
        program.run(backend=backend)
    assert len(backend.calls) == 1  # nothing runs after the error


def test_reading_a_variable_of_a_failed_call_raises_inside_the_program(
    backend: FakeBackend,
) -> None:
    seen: list[BaseException] = []

    @rs.function
    def program(s):
        s += "FAIL" + rs.gen("a")
        try:
            s["a"]
        except BackendError as exc:
            seen.append(exc)
            raise

    with pytest.raises(BackendError):
        program.run(backend=backend)
    assert seen and "HTTP 400" in str(seen[0])


def test_run_batch_keeps_order_and_isolates_errors() -> None:
    backend = FakeBackend(reply=lambda p: p.split(":")[0], delay_s=0.01)

    @rs.function
    def program(s, word):
        s += f"{word}:" + rs.gen("out")

    words = ["a", "FAIL", "c", "d"]
    states = program.run_batch([{"word": w} for w in words], num_threads=3, backend=backend)
    assert [s.error() is None for s in states] == [True, False, True, True]
    assert "temperature must be >= 0" in str(states[1].error())
    assert [states[i]["out"] for i in (0, 2, 3)] == ["a", "c", "d"]


def test_run_batch_precache_waits_for_the_first_call() -> None:
    order: list[str] = []
    first_done = threading.Event()

    class Probe(FakeBackend):
        def generate(self, prompt, sampling, return_logprob=False, top_logprobs_num=0):
            order.append(("late " if first_done.is_set() else "early ") + prompt)
            out = super().generate(prompt, sampling)
            if prompt == "0":
                first_done.set()
            return out

    @rs.function
    def program(s, i):
        s += str(i) + rs.gen("x")

    probe = Probe(delay_s=0.05)
    program.run_batch([{"i": i} for i in range(4)], backend=probe)
    assert order[0] == "early 0" and all(o.startswith("late") for o in order[1:])


def test_stream_yields_text_in_order_then_raises_the_error(backend: FakeBackend) -> None:
    backend.reply = lambda prompt: "one two three"

    @rs.function
    def program(s, fail):
        s += "x" + rs.gen("a")
        if fail:
            s += "FAIL" + rs.gen("b")

    state = program.run(fail=False, stream=True, backend=backend)
    assert "".join(state.text_iter()) == "xone two three "
    assert list(program.run(fail=False, stream=True, backend=backend).text_iter("a")) == [
        "one ",
        "two ",
        "three ",
    ]
    state = program.run(fail=True, stream=True, backend=backend)
    with pytest.raises(BackendError):
        list(state.text_iter())


def test_nested_function_call_and_missing_variable(backend: FakeBackend) -> None:
    @rs.function
    def inner(s, x):
        s += x + rs.gen("inner")

    @rs.function
    def outer(s):
        inner(s, "hi")
        s += "!"

    state = outer.run(backend=backend)
    assert state.text() == "hi[2]!"
    with pytest.raises(KeyError, match="no variable 'nope'"):
        state["nope"]


def test_appending_a_non_string_is_a_clear_error(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        s += 3

    with pytest.raises(TypeError, match="not int"):
        program.run(backend=backend)


def test_a_variable_submitted_after_an_error_does_not_hang(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        s += "FAIL" + rs.gen("a")
        s.sync()
        s += "later" + rs.gen("b")
        return s["b"]

    with pytest.raises(BackendError):
        program.run(backend=backend)


def test_gen_grammar_arguments_reach_the_sampling_params() -> None:
    import json
    import re

    from radixserve.runtime.wire.sampling_params import SamplingParams

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert rs.gen("x", json_schema=schema).sampling["json_schema"] == json.dumps(schema)
    assert rs.gen("x", ebnf='root ::= "a"').sampling == {"ebnf": 'root ::= "a"'}
    # SGLang's regexes (sglang.lang.ir), so a float has no exponent; numbers stop at a blank.
    for dtype, good, bad, exact, stop in [
        (int, "-42", "4.2", rs.REGEX_INT, (" ", "\n")),
        ("float", "-3.25", "3.", rs.REGEX_FLOAT, (" ", "\n")),
        (bool, "True", "true", rs.REGEX_BOOL, ()),
        (str, '"hello world"', "hello", rs.REGEX_STR, ()),
    ]:
        expr = rs.gen("x", dtype=dtype)
        regex = expr.sampling["regex"]
        assert regex == exact and expr.extra_stop == stop, dtype
        assert re.fullmatch(regex, good) and not re.fullmatch(regex, bad), dtype
        SamplingParams(regex=regex).validate()  # a regex the grammar backend compiles
    with pytest.raises(ValueError, match="not both"):
        rs.gen("x", dtype=int, regex="[0-9]")
    with pytest.raises(ValueError, match="int, float, bool or str"):
        rs.gen("x", dtype=list)
