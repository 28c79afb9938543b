"""SGLang's frontend semantics (python/sglang/lang/interpreter.py, ir.py, choices.py) against a
scripted backend: fork groups, joins, var scopes, variables, nested programs, run_batch, choices
methods and the dtype regexes."""

from __future__ import annotations

import threading
import time

import pytest

import radixserve as rs
from radixserve.frontend_lang.ir import Gen, Select
from tests.frontend_lang.fakes import FakeBackend


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def test_fork_items_take_appends_and_cannot_be_replaced(backend: FakeBackend) -> None:
    @rs.function
    def judge(s):
        s += "Article.\n"
        forks = s.fork(3)
        for i in range(3):
            forks[i] += f"Metric {i}:"  # Python calls forks.__setitem__(i, forks[i]) after this
            forks[i] += rs.gen("judgement", max_tokens=4)
        forks.join()
        return [forks[i]["judgement"] for i in range(3)]

    state = judge.run(backend=backend)
    assert state["judgement"] == state.ret_value == ["[18]", "[18]", "[18]"]
    assert sorted(c[1] for c in backend.calls if c[0] == "generate") == [
        f"Article.\nMetric {i}:" for i in range(3)
    ]

    @rs.function
    def replaces(s):
        forks = s.fork(2)
        forks[0] = forks[1]

    with pytest.raises(TypeError, match="cannot be replaced"):
        replaces.run(backend=backend)


def test_nothing_is_submitted_before_a_type_error(backend: FakeBackend) -> None:
    @rs.function
    def bad_list(s):
        forks = s.fork(2)
        forks += [rs.gen("a"), 3]

    with pytest.raises(TypeError, match="not int"):
        bad_list.run(backend=backend)
    time.sleep(0.05)
    assert [c[0] for c in backend.calls] == []  # neither branch got its expression

    @rs.function
    def per_branch(s):
        forks = s.fork(2)
        forks += lambda i: f"branch {i}:" + rs.gen("x")
        forks.join()

    assert per_branch.run(backend=backend)["x"] == ["[9]", "[9]"]


def test_fork_of_one_sends_no_prefill(backend: FakeBackend) -> None:
    @rs.function
    def program(s, size):
        s += "shared prefix"
        forks = s.fork(size)
        forks += rs.gen("x")
        forks.join()

    program.run(size=1, backend=backend)
    assert [c[0] for c in backend.calls] == ["generate"]
    backend.calls.clear()
    program.run(size=2, backend=backend)
    assert [c[0] for c in backend.calls] == ["cache_prefix", "generate", "generate"]


def test_join_gathers_only_names_the_parent_lacks(backend: FakeBackend) -> None:
    """SGLang's ReAct benchmark: fork(1) per step, the same variable name every step."""
    replies = iter(["step one", "step two", "step three"])
    backend.reply = lambda prompt: next(replies)

    @rs.function
    def react(s):
        seen = []
        for i in range(1, 4):
            s += f"Thought {i}:"
            ss = s.fork(1)
            ss[0] += rs.gen(name="thought_action", max_tokens=8, stop="Observation")
            ss.join()
            seen.append(ss[0]["thought_action"])
            s += " observed\n"
        return seen

    state = react.run(backend=backend)
    assert state.ret_value == ["step one", "step two", "step three"]
    assert state["thought_action"] == ["step one"]  # the first join's list, kept
    assert len(state.get_meta_info("thought_action")) == 1


def test_join_lists_only_the_branches_that_have_the_name(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        forks = s.fork(3)
        forks[0] += rs.gen("a")
        forks[2] += rs.gen("a") + rs.gen("b")
        forks.join()

    state = program.run(backend=backend)
    assert state["a"] == ["[0]", "[0]"] and state["b"] == ["[3]"]


def test_nested_joins_give_lists_of_lists(backend: FakeBackend) -> None:
    """SGLang's tree-of-thought benchmark: forks of forks joined innermost first."""

    @rs.function
    def tree(s):
        groups = []
        plans = s.fork(2)
        plans += rs.gen("plan")
        groups.append(plans)
        for plan in plans:
            answers = plan.fork(2)
            answers += rs.gen("answer")
            groups.append(answers)
        for group in reversed(groups):
            group.join()

    state = tree.run(backend=backend)
    assert state["plan"] == ["[0]", "[0]"]
    assert state["answer"] == [["[3]", "[3]"], ["[3]", "[3]"]]


def test_var_scope_captures_the_text_appended_inside(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        s += "Intro.\n"
        with s.var_scope("json_output"):
            s += "{\n"
            s += '  "name": ' + rs.gen("name", max_tokens=8, regex=rs.REGEX_STR + ",") + "\n"
            s += "}\n"
        s += "after"
        return s["json_output"]  # waits for the scope's end

    state = program.run(backend=backend)
    assert state.ret_value == '{\n  "name": [19]\n}\n' == state["json_output"]
    assert state.get_meta_info("json_output") is None  # no call produced it
    assert state.get_meta_info("name")["prompt_tokens"] == 19


def test_setting_a_variable(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        s += rs.gen("x")
        s["x"] = "overridden"  # after the gen, in the program's order
        s["y"] = 3
        s.set_var("z", [1])

    state = program.run(backend=backend)
    assert (state["x"], state["y"], state["z"]) == ("overridden", 3, [1])
    assert "y" in state and state.get_meta_info("y") is None


def test_copy_is_a_joined_fork_of_one(backend: FakeBackend) -> None:
    @rs.function
    def program(s):
        s += "base "
        with s.copy() as c:
            c += "side" + rs.gen("side")
        s += "main"

    state = program.run(backend=backend)
    assert state["side"] == ["[9]"] and state.text() == "base main"
    assert [c[0] for c in backend.calls] == ["generate"]


def test_a_nested_program_returns_at_once(backend: FakeBackend) -> None:
    """SGLang's tip-suggestion benchmark: each expand call runs while the next tip generates."""
    in_flight, peak = [0], [0]
    lock = threading.Lock()
    inner_generate = backend.generate

    def counting(prompt, sampling, return_logprob=False, top_logprobs_num=0):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return inner_generate(prompt, sampling, return_logprob, top_logprobs_num)
        finally:
            with lock:
                in_flight[0] -= 1

    backend.generate = counting
    backend.delay_s = 0.2

    @rs.function
    def expand(s, tip):
        s += "Tip: " + tip + "\nParagraph:" + rs.gen("paragraph", max_tokens=4)

    @rs.function
    def suggest(s):
        paragraphs = [expand(tip=f"tip {i}") for i in range(3)]  # none of these waits
        for i, p in enumerate(paragraphs):
            s += f"Tip {i}:" + p["paragraph"] + "\n"

    state = suggest.run(backend=backend)  # no default backend: the nested calls inherit it
    assert peak[0] == 3
    assert state.text() == "Tip 0:[21]\nTip 1:[21]\nTip 2:[21]\n"


def test_run_batch_reraises_a_program_bug_after_every_program_ended(
    backend: FakeBackend,
) -> None:
    @rs.function
    def program(s, i):
        s += f"{i}:" + rs.gen("x")
        if i == 1:
            raise ValueError("a bug in the program body")

    with pytest.raises(ValueError, match="a bug in the program body"):
        program.run_batch([{"i": i} for i in range(4)], backend=backend)
    assert {"0:", "2:", "3:"} <= {c[1] for c in backend.calls}  # the others ran to the end


def test_run_batch_positional_rows_auto_threads_and_progress(backend: FakeBackend) -> None:
    @rs.function
    def program(s, a, b="-"):
        s += a + b + rs.gen("x")

    states = program.run_batch(
        [("x", "y"), ["z"], {"a": "p", "b": "q"}],
        num_threads="auto",
        progress_bar=True,
        backend=backend,
    )
    assert [s.text() for s in states] == ["xy[2]", "z-[2]", "pq[2]"]
    with pytest.raises(TypeError, match="takes 2 arguments"):
        program.run_batch([("a", "b", "c")], backend=backend)
    with pytest.raises(ValueError, match="num_threads"):
        program.run_batch([("a",)], num_threads=0, backend=backend)


def test_dtype_numbers_stop_at_a_blank_after_runs_stop(backend: FakeBackend) -> None:
    assert rs.REGEX_INT == r"[-+]?[0-9]+[ \n]*"
    assert rs.REGEX_FLOAT == r"[-+]?[0-9]*\.?[0-9]+[ \n]*"
    assert rs.REGEX_BOOL == r"(True|False)"
    assert rs.REGEX_STR == r"\"[\w\d\s]*\""

    @rs.function
    def program(s):
        s += "n=" + rs.gen("n", dtype=int) + " f=" + rs.gen("f", dtype="float", stop=";")
        s += " b=" + rs.gen_int("m") + rs.gen_string("t") + rs.gen("u", dtype=bool)

    program.run(stop="END", backend=backend)
    sampling = [c[2] for c in backend.calls]
    assert sampling[0]["regex"] == rs.REGEX_INT and sampling[0]["stop"] == ["END", " ", "\n"]
    assert sampling[1]["regex"] == rs.REGEX_FLOAT and sampling[1]["stop"] == [";", " ", "\n"]
    assert sampling[2]["regex"] == rs.REGEX_INT
    assert sampling[3]["regex"] == rs.REGEX_STR and sampling[3]["stop"] == "END"
    assert sampling[4]["regex"] == rs.REGEX_BOOL and sampling[4]["stop"] == "END"


def test_gen_with_choices_is_a_select() -> None:
    expr = rs.gen("c", choices=["a", "b"], choices_method=rs.greedy_token_selection)
    assert isinstance(expr, Select) and expr.choices_method is rs.greedy_token_selection
    default = rs.gen("c", choices=["a"])
    assert isinstance(default, Select) and default.choices_method is rs.token_length_normalized
    assert isinstance(rs.gen("c", choices=[]), Gen)  # SGLang: no choices, a plain gen
    with pytest.raises(ValueError, match="temperature=0"):
        rs.gen("c", choices=["a"], temperature=0.5)


def test_greedy_token_selection_pads_a_shorter_choice_with_its_mean() -> None:
    # Column 2: choice 0 is padded with mean(-0.1, -0.2) = -0.15, which beats -0.5.
    assert rs.greedy_token_selection.pick([[-0.1, -0.2], [-0.1, -0.2, -0.5]]) == 0
    assert rs.greedy_token_selection.pick([[-0.1, -0.2], [-0.1, -0.2, -0.01]]) == 1
    assert rs.greedy_token_selection.pick([[-0.3], [-0.3]]) == 0  # a full tie: the first


def test_unconditional_likelihood_normalized() -> None:
    conditional = [[-1.0, -1.0], [-0.5, -0.5]]
    unconditional = [[0.0, -3.0], [0.0, -0.1]]  # the first token has no logprob alone: 0
    assert rs.token_length_normalized.pick(conditional) == 1
    method = rs.unconditional_likelihood_normalized
    assert method.scores(conditional, unconditional) == pytest.approx([0.5, -0.45])
    assert method.pick(conditional, unconditional) == 0
    with pytest.raises(ValueError, match="unconditional logprobs"):
        method.pick(conditional)


def test_select_with_each_choices_method(backend: FakeBackend) -> None:
    backend.scores = ([[-1.0, -1.0], [-0.5, -0.5]], [[0.0, -3.0], [0.0, -0.1]])

    @rs.function
    def pick(s, method):
        s += "Q: " + rs.select("answer", ["one", "two"], choices_method=method)

    state = pick.run(method=rs.token_length_normalized, backend=backend)
    assert state["answer"] == "two" and backend.calls[-1][2] == {"unconditional": False}
    state = pick.run(method=rs.unconditional_likelihood_normalized, backend=backend)
    assert state["answer"] == "one" and backend.calls[-1][2] == {"unconditional": True}
    meta = state.get_meta_info("answer")
    assert meta["normalized_unconditional_prompt_logprobs"] == pytest.approx([0.5, -0.45])
    assert meta["normalized_prompt_logprobs"] == pytest.approx([-1.0, -0.5])
    assert meta["choice_index"] == 0
