"""The shapes of SGLang's benchmark programs (benchmark/ in sgl-project/sglang: mmlu, hellaswag,
react, tree_of_thought, llm_judge, tip_suggestion, json_decode_regex, multi_turn_chat), their
bodies as SGLang writes them with `import radixserve as sgl`, run on the embedded model.

The assertions are about structure and semantics (variables, lists gathered by joins, what the
radix cache reused), never about the answers' quality; max_tokens stay short for the CPU.
"""

from __future__ import annotations

import re

import pytest

import radixserve as sgl
from radixserve.frontend_lang.ir import REGEX_FLOAT, REGEX_INT, REGEX_STR

pytestmark = pytest.mark.slow
PAGE = 16  # the server's default page size: the cache reuses whole pages only

FEW_SHOT = "".join(
    f"Question: What is the capital of {country}?\nAnswer: {city}\n\n"
    for country, city in [
        ("France", "Paris"),
        ("Italy", "Rome"),
        ("Germany", "Berlin"),
        ("Spain", "Madrid"),
        ("Japan", "Tokyo"),
        ("Egypt", "Cairo"),
    ]
)
CITIES = ["Lisbon", "Vienna", "Athens", "Oslo"]


@sgl.function
def few_shot_select(s, question, choices):
    s += FEW_SHOT + question
    s += sgl.select("answer", choices=choices)


@sgl.function
def few_shot_gen(s, examples, question):
    s += examples + question + sgl.gen("answer")


def test_few_shot_multiple_choice(backend: sgl.RuntimeEndpoint) -> None:
    """hellaswag (select over choices) and mmlu (one generated token) through run_batch."""
    sgl.flush_cache()
    countries = ["Portugal", "Austria", "Greece"]
    arguments = [
        {"question": f"Question: What is the capital of {c}?\nAnswer: ", "choices": CITIES}
        for c in countries
    ]
    states = few_shot_select.run_batch(
        arguments, temperature=0, num_threads="auto", progress_bar=True
    )
    assert all(s["answer"] in CITIES for s in states)
    prefix = backend.cache_prefix(FEW_SHOT)["prompt_tokens"]
    metas = [s.get_meta_info("answer") for s in states]
    assert metas[0]["cached_tokens"] < PAGE  # the first program computed the shared prefix
    for meta in metas[1:]:
        assert meta["cached_tokens"] >= prefix - PAGE, meta  # ... which the others reused
        assert len(meta["normalized_prompt_logprobs"]) == len(CITIES)

    rows = [(FEW_SHOT, a["question"]) for a in arguments]  # positional rows, as SGLang takes
    states = few_shot_gen.run_batch(rows, temperature=0, max_new_tokens=1)
    for state in states:
        meta = state.get_meta_info("answer")
        assert meta["completion_tokens"] == 1 and meta["cached_tokens"] >= prefix - PAGE


@sgl.function
def pick_city(s, question, method):
    s += FEW_SHOT + question + sgl.gen("answer", choices=CITIES, choices_method=method)


def test_choices_methods_on_the_server(runtime: sgl.Runtime) -> None:
    question = "Question: What is the capital of Austria?\nAnswer: "
    # token_length_normalized (the default) ran in the test above.
    for method in (sgl.greedy_token_selection, sgl.unconditional_likelihood_normalized):
        state = pick_city.run(question=question, method=method)
        meta = state.get_meta_info("answer")
        assert state["answer"] in CITIES and meta["choices_method"] == method.name
    # Scored alone, every token of a choice has a logprob but the first (0 by convention).
    unconditional = meta["unconditional_token_logprobs"]
    assert [len(u) for u in unconditional] == [len(t) for t in meta["token_logprobs"]]
    assert all(u[0] == 0.0 and all(x <= 0 for x in u) for u in unconditional)
    assert len(meta["normalized_unconditional_prompt_logprobs"]) == len(CITIES)


REACT_PREFIX = (
    "Solve a question answering task with interleaving Thought, Action, Observation steps.\n"
    "Question: Which city is the capital of France?\n"
)
TRIPLETS = [
    {
        "thought": " I need to search France.",
        "action": " Search[France]",
        "observation": " France is a country whose capital is Paris.",
    },
    {
        "thought": " The capital is Paris.",
        "action": " Finish[Paris]",
        "observation": " Episode finished.",
    },
]


@sgl.function
def webthink(s, question, triplets):
    steps = []  # not in SGLang's body: the branches, for the test to read
    s += REACT_PREFIX + question
    for i in range(1, len(triplets) + 2):
        s += "Thought " + str(i) + ":"
        ss = s.fork(1)
        ss[0] += sgl.gen(name="thought_action", max_tokens=8, stop="Observation")
        ss.join()
        steps.append(ss[0])
        s["steps_taken"] = i
        if i > len(triplets):
            break
        s += (
            triplets[i - 1]["thought"]
            + "\nAction "
            + str(i)
            + ":"
            + triplets[i - 1]["action"]
            + "\nObservation "
            + str(i)
            + ":"
            + triplets[i - 1]["observation"]
            + "\n"
        )
    return steps


def test_react_fork_join(runtime: sgl.Runtime) -> None:
    (state,) = webthink.run_batch(
        [{"question": "", "triplets": TRIPLETS}], temperature=0, progress_bar=True
    )
    steps = state.ret_value
    assert len(steps) == 3 == state["steps_taken"]
    # Only the first join gathered the name; later joins left the parent's value alone.
    assert state["thought_action"] == [steps[0]["thought_action"]]
    assert (
        state.text().count("Thought ") == 3 and "Observation 2: Episode finished." in state.text()
    )
    metas = [step.get_meta_info("thought_action") for step in steps]
    for before, after in zip(metas, metas[1:], strict=False):
        # Each step's prompt extends the one before: the radix cache has all of it.
        assert after["cached_tokens"] >= before["prompt_tokens"] - PAGE - 1


def propose_plan(s, question, num_branches):
    s += sgl.user("Make a short plan for this question: " + question)
    forks = s.fork(num_branches)
    forks += sgl.assistant(sgl.gen("plan", max_tokens=4, temperature=0.3))
    return forks


def execute_plan(s, num_branches):
    s += sgl.user("Now solve it.")
    forks = s.fork(num_branches)
    forks += sgl.assistant(sgl.gen("answer", max_tokens=4, temperature=0.3))
    return forks


def reflect_solution(s, num_branches):
    s += sgl.user("Score your solution from 1 to 5.")
    forks = s.fork(num_branches)
    forks += sgl.assistant(sgl.gen("score", max_tokens=2, temperature=0.3))
    return forks


@sgl.function
def tree_search(s, question, num_branches):
    forks_to_join = []
    plan_forks = propose_plan(s, question, num_branches)
    forks_to_join.append(plan_forks)
    sol_states = []
    for plan in plan_forks:
        forks = execute_plan(plan, num_branches)
        forks_to_join.append(forks)
        sol_states.extend(forks)
    for sol in sol_states:
        forks = reflect_solution(sol, num_branches)
        forks_to_join.append(forks)
    for f in reversed(forks_to_join):
        f.join()
    return forks_to_join[0].prefix_meta


def test_tree_of_thought(runtime: sgl.Runtime) -> None:
    state = tree_search.run(question="What is 12 + 30?", num_branches=2, temperature=0)
    assert len(state["plan"]) == 2 and all(isinstance(p, str) for p in state["plan"])
    answers = [x for xs in state["answer"] for x in xs]  # as the benchmark reads them
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    scores = state["score"]  # per plan, per answer, per reflection
    assert [[len(r) for r in per_plan] for per_plan in scores] == [[2, 2], [2, 2]]
    prefix = state.ret_value["prompt_tokens"]
    for per_plan in state.get_meta_info("plan"):
        assert per_plan["cached_tokens"] >= prefix - PAGE  # the fork's prefill, reused


SYSTEM_PROMPT = "Please serve as an impartial judge and evaluate the following article."
DIMENSIONS = [
    "Content: accurate and relevant.",
    "Organization: clear structure.",
    "Argument: logical and backed up.",
    "Clarity: easy to understand.",
    "Grammar: correct grammar and punctuation.",
    "Referencing: proper citations.",
]


@sgl.function
def multi_dimension_judge(s, article):
    s += SYSTEM_PROMPT
    s += "\n```\n" + article + "\n```\n\n"
    forks = s.fork(len(DIMENSIONS))
    for i in range(len(DIMENSIONS)):
        forks[i] += (
            "USER: Please judge the quality based on the following metric. "
            + DIMENSIONS[i]
            + ' End your judgement with the word "END"\nJUDGE:'
        )
        forks[i] += sgl.gen("judgement", max_tokens=6, stop="END")
    forks.join()
    s += "I will judge the quality based on the following metrics.\n"
    for i in range(len(DIMENSIONS)):
        s += DIMENSIONS[i].split(":")[0] + ": " + forks[i]["judgement"].strip() + "\n"
    s += "In summary, on a scale of 1 to 10, I would give the article a score of"
    s += sgl.gen("score", max_tokens=2)
    return forks.prefix_meta


def test_llm_judge_six_forks(runtime: sgl.Runtime) -> None:
    article = "Cats sleep a lot. They like warm places. Many people keep cats as pets."
    (state,) = multi_dimension_judge.run_batch([{"article": article}], temperature=0)
    judgements = state["judgement"]
    assert len(judgements) == 6 and all(isinstance(j, str) for j in judgements)
    for dimension, judgement in zip(DIMENSIONS, judgements, strict=True):
        assert f"{dimension.split(':')[0]}: {judgement.strip()}\n" in state.text()
    prefix = state.ret_value["prompt_tokens"]
    for meta in state.get_meta_info("judgement"):  # the article, computed once for six
        assert meta["cached_tokens"] >= prefix - PAGE
    assert isinstance(state["score"], str)


@sgl.function
def expand_tip(s, topic, tip):
    s += (
        "Please expand a tip for a topic into a short paragraph.\n\n"
        "Topic: staying healthy\nTip: Regular Exercise\n"
        "Paragraph: Walk, cycle or do yoga every day.\n\n"
        "Topic: " + topic + "\nTip: " + tip + "\nParagraph:"
    )
    s += sgl.gen("paragraph", max_tokens=6, stop=["\n\n"], temperature=0)


NUMBER = 3


@sgl.function
def suggest_tips(s, topic):
    s += "Please act as a helpful assistant. Give useful tips on a specific topic.\n"
    s += "USER: Give some tips for " + topic + ".\n"
    s += "ASSISTANT: Okay. Here are " + str(NUMBER) + " concise tips, each under 8 words:\n"
    paragraphs = []
    for i in range(1, 1 + NUMBER):
        s += f"{i}." + sgl.gen(f"tip_{i}", max_tokens=6, stop=[".", "\n"]) + ".\n"
        paragraphs.append(expand_tip(topic=topic, tip=s[f"tip_{i}"]))
    for i in range(1, 1 + NUMBER):
        s += f"Tip {i}:" + paragraphs[i - 1]["paragraph"] + "\n"
    return paragraphs


def test_tip_suggestion_with_nested_programs(runtime: sgl.Runtime) -> None:
    states = suggest_tips.run_batch(
        [{"topic": "staying healthy"}, {"topic": "writing a blog post"}], temperature=0
    )
    for state in states:
        paragraphs = state.ret_value
        assert [p.error() for p in paragraphs] == [None] * NUMBER
        for i, p in enumerate(paragraphs, start=1):
            assert p.text().endswith("Tip: " + state[f"tip_{i}"] + "\nParagraph:" + p["paragraph"])
            assert f"Tip {i}:{p['paragraph']}\n" in state.text()


REGEX_LIST = r"\[(" + REGEX_STR + ", )*" + REGEX_STR + r"\]"


@sgl.function
def json_decode(s, document):
    s += "Please extract the information of a city from the following wikipedia page.\n"
    s += "Page begin.\n" + document + "Page end.\n"
    s += "Here is the name, country, and symbol of the city in JSON format.\n"
    with s.var_scope("json_output"):
        s += "{\n"
        s += '  "name": ' + sgl.gen("name", max_tokens=8, regex=REGEX_STR + ",") + "\n"
        s += '  "country": ' + sgl.gen("country", max_tokens=8, regex=REGEX_STR + ",") + "\n"
        s += '  "latitude": ' + sgl.gen("latitude", max_tokens=8, regex=REGEX_FLOAT + ",") + "\n"
        s += '  "population": ' + sgl.gen("population", max_tokens=8, regex=REGEX_INT + ",") + "\n"
        s += '  "top 3 landmarks": ' + sgl.gen("landmarks", max_tokens=16, regex=REGEX_LIST) + "\n"
        s += "}\n"


def test_json_via_regex_gen_and_var_scope(runtime: sgl.Runtime) -> None:
    document = "Paris is the capital of France. About 2.1 million people live there.\n"
    state = json_decode.run(document=document, temperature=0)
    fields = [
        ("name", REGEX_STR + ","),
        ("country", REGEX_STR + ","),
        ("latitude", REGEX_FLOAT + ","),
        ("population", REGEX_INT + ","),
        ("landmarks", REGEX_LIST),
    ]
    expected = "{\n" + "".join(
        f'  "{key}": {state[name]}\n'
        for key, (name, _) in zip(
            ["name", "country", "latitude", "population", "top 3 landmarks"], fields, strict=True
        )
    )
    assert state["json_output"] == expected + "}\n"
    assert state.text().endswith(state["json_output"])
    for name, regex in fields:
        if state.get_meta_info(name)["finish_reason"]["type"] != "length":
            assert re.fullmatch(regex, state[name]), (name, state[name])
        else:  # cut by max_tokens: still a prefix the grammar allowed
            assert state[name] and state[name][0] in '"-+0123456789.['


@sgl.function
def multi_turns(s, qas):
    for qa in qas:
        s += qa["prompt"]
        s += sgl.gen(max_tokens=qa["new_tokens"], ignore_eos=True)


def test_multi_turn_chat(backend: sgl.RuntimeEndpoint) -> None:
    qas = [
        {"prompt": f"Turn {i}: tell me something about the number {i}.\n", "new_tokens": 3}
        for i in range(4)
    ]
    states = multi_turns.run_batch([{"qas": qas}, {"qas": qas[:2]}], temperature=0)
    for state, turns in zip(states, [qas, qas[:2]], strict=True):
        text = state.text()
        positions = [text.index(qa["prompt"]) for qa in turns]
        assert positions == sorted(positions) and positions[0] == 0
        assert len(text) > sum(len(qa["prompt"]) for qa in turns)  # each turn generated

    @sgl.function
    def one_more(s, qas):
        multi_turns(s, qas)  # a function called with the state runs its body on that state
        s += "Done." + sgl.gen("last", max_tokens=1)

    state = one_more.run(qas=qas, temperature=0)
    text = state.text()
    before_last_turn = text[: text.index(qas[-1]["prompt"]) + len(qas[-1]["prompt"])]
    earlier = backend.cache_prefix(before_last_turn)["prompt_tokens"]
    assert state.get_meta_info("last")["cached_tokens"] >= earlier - PAGE  # every earlier turn


def test_endpoint_waits_without_a_time_out(backend: sgl.RuntimeEndpoint) -> None:
    """SGLang's endpoint has no client time-out; a long program on a busy server must not end
    because one call waited in the queue."""
    assert backend.client.timeout.read is None and backend.client.timeout.connect
    info = sgl.get_server_info()
    assert isinstance(info, dict) and info
