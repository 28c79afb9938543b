"""EleutherAI's lm-evaluation-harness, unmodified, against a real server on the embedded model.

A small local task (JSONL files and task YAMLs in a temp dir, loaded through `include_path`,
offline) runs through lm-eval's Python API:
- `local-completions` with its default `tokenizer_backend=auto`: lm-eval finds /tokenizer_info
  and /tokenize and tokenizes on the server; loglikelihoods arrive as token-id prompts with
  `echo` + `logprobs`, one request per (context, continuation);
- `local-completions` with a local HF tokenizer, strings instead of token ids, several prompts
  per request and concurrent requests;
- `local-chat-completions` with the chat template and multi-turn few-shot examples.
Each (context, continuation) loglikelihood must equal HF transformers' on the same weights (the
GGUF dequantized, float32) within LOGLIKELIHOOD_TOLERANCE, and the run must reuse the few-shot
prefix every document shares (the scheduler's cache_hit_tokens grow accordingly).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.runtime.server.http.conftest import ServerProcess
from tests.runtime.smollm2 import smollm2_tokenizer

pytestmark = pytest.mark.slow
lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed (pip install 'lm-eval[api]')"
)

# Absolute, per (context, continuation) sum of token logprobs; measured differences are ~2e-5.
LOGLIKELIHOOD_TOLERANCE = 1e-3
NUM_FEWSHOT = 2
PAGE = 16  # the server's KV page size (ServerArgs.page_size default)
TRAIN = [
    {"country": "France", "capital": "Paris", "choices": ["Paris", "Lyon", "Nice"], "label": 0},
    {"country": "Japan", "capital": "Tokyo", "choices": ["Osaka", "Tokyo", "Kyoto"], "label": 1},
]
TEST = [
    {"country": "Italy", "capital": "Rome", "choices": ["Milan", "Naples", "Rome"], "label": 2},
    {
        "country": "Germany",
        "capital": "Berlin",
        "choices": ["Berlin", "Munich", "Bonn"],
        "label": 0,
    },
    {
        "country": "Spain",
        "capital": "Madrid",
        "choices": ["Seville", "Madrid", "Bilbao"],
        "label": 1,
    },
    {
        "country": "Canada",
        "capital": "Ottawa",
        "choices": ["Toronto", "Quebec", "Ottawa"],
        "label": 2,
    },
]
DESCRIPTION = (
    "The following are questions about world geography. Answer each question with the name "
    "of the capital city of the country.\\n\\n"
)
COMMON = """dataset_path: json
dataset_kwargs:
  data_files:
    train: {dir}/train.jsonl
    test: {dir}/test.jsonl
  cache_dir: {dir}/hf_datasets
training_split: train
test_split: test
fewshot_split: train
fewshot_config:
  sampler: first_n
description: "{description}"
doc_to_text: "Question: What is the capital of {{{{country}}}}?\\nAnswer:"
"""
MULTIPLE_CHOICE = """task: radixserve_capitals_mc
output_type: multiple_choice
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
"""
GENERATE = """task: radixserve_capitals_gen
output_type: generate_until
doc_to_target: " {{capital}}"
target_delimiter: ""
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    ignore_case: true
    ignore_punctuation: true
"""
MC, GEN = "radixserve_capitals_mc", "radixserve_capitals_gen"


@dataclass
class Setup:
    server: ServerProcess
    task_dir: Path
    tokenizer_dir: Path

    def url(self, path: str) -> str:
        return f"{self.server.base_url}{path}"

    def cache_hits(self) -> int:
        with self.server.client() as client:
            return client.get("/get_server_info").json()["scheduler"]["cache_hit_tokens"]

    def flush(self) -> None:
        with self.server.client() as client:
            assert client.post("/flush_cache").status_code == 200

    def evaluate(self, model: str, tasks: list[str], model_args: str, **options: Any) -> dict:
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=str(self.task_dir))
        return lm_eval.simple_evaluate(
            model=model,
            model_args=f"model=SmolLM2-135M-Instruct,{model_args}",
            tasks=tasks,
            num_fewshot=NUM_FEWSHOT,
            task_manager=manager,
            log_samples=True,
            **options,
        )


@pytest.fixture(scope="module")
def setup(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    task_dir = tmp_path_factory.mktemp("lm_eval_task")
    for name, rows in (("train", TRAIN), ("test", TEST)):
        (task_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = COMMON.format(dir=task_dir, description=DESCRIPTION)
    (task_dir / "mc.yaml").write_text(MULTIPLE_CHOICE + common)
    (task_dir / "gen.yaml").write_text(GENERATE + common)
    tokenizer_dir = tmp_path_factory.mktemp("lm_eval_tokenizer")
    smollm2_tokenizer().save_pretrained(str(tokenizer_dir))
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # lm-eval's API models send `Authorization: Bearer $OPENAI_API_KEY`.
    env = {**offline, "OPENAI_API_KEY": server.api_key or ""}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield Setup(server, task_dir, tokenizer_dir)


@pytest.fixture(scope="module")
def hf_model() -> Any:
    from transformers import AutoModelForCausalLM

    from radixserve.runtime.config.model_source import resolve_model_source

    source = resolve_model_source(None)
    model = AutoModelForCausalLM.from_pretrained(
        source.directory, gguf_file=source.gguf_file, dtype=torch.float32
    )
    return model.eval()


def encode_pair(context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing spaces move to the continuation, the pair is encoded whole."""
    tokenizer = smollm2_tokenizer()
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    return context_ids, whole[len(context_ids) :]


def hf_loglikelihood(model: Any, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    rows = logprobs[len(context) - 1 : -1]
    target = torch.tensor(continuation)
    total = rows.gather(1, target.unsqueeze(1)).sum().item()
    return total, bool((rows.argmax(-1) == target).all())


def loglikelihood_requests(result: dict) -> list[tuple[str, str, float, bool]]:
    """(context, continuation, loglikelihood, is_greedy) of every request of the MC task."""
    out = []
    for sample in result["samples"][MC]:
        for (context, continuation), (response,) in zip(
            sample["arguments"], sample["resps"], strict=True
        ):
            out.append((context, continuation, *response))
    return out


def shared_prefix_len(token_lists: list[list[int]]) -> int:
    first = token_lists[0]
    n = len(first)
    for ids in token_lists[1:]:
        n = next((i for i, (a, b) in enumerate(zip(first, ids, strict=False)) if a != b), n)
        n = min(n, len(ids))
    return n


@pytest.fixture(scope="module")
def remote_run(setup: Setup) -> tuple[dict, int]:
    """`local-completions` as the README runs it: no local tokenizer (the server's is used),
    token-id prompts, one request at a time; and the cache hits it caused."""
    setup.flush()
    before = setup.cache_hits()
    args = f"base_url={setup.url('/v1/completions')},auth_token={setup.server.api_key}"
    result = setup.evaluate("local-completions", [MC, GEN], args)
    return result, setup.cache_hits() - before


def test_lm_eval_tokenizes_on_the_server(setup: Setup) -> None:
    from lm_eval.api.registry import get_model

    options = {"base_url": setup.url("/v1/completions"), "auth_token": setup.server.api_key}
    lm: Any = get_model("local-completions").create_from_arg_obj(options)
    tokenizer = smollm2_tokenizer()
    assert lm.tokenizer_backend == "remote"
    assert lm.tok_encode("Hello world") == tokenizer.encode("Hello world")
    assert lm.eot_token_id == tokenizer.eos_token_id and lm.eos_string == tokenizer.eos_token


def test_loglikelihoods_equal_hf_transformers(remote_run: tuple[dict, int], hf_model: Any) -> None:
    result, _ = remote_run
    requests = loglikelihood_requests(result)
    assert len(requests) == sum(len(doc["choices"]) for doc in TEST)
    worst = 0.0
    for context, continuation, loglikelihood, is_greedy in requests:
        want, want_greedy = hf_loglikelihood(hf_model, *encode_pair(context, continuation))
        worst = max(worst, abs(loglikelihood - want))
        assert loglikelihood == pytest.approx(want, abs=LOGLIKELIHOOD_TOLERANCE), (
            f"{context!r} + {continuation!r}"
        )
        assert is_greedy == want_greedy
    print(f"largest |radixserve - HF| loglikelihood difference: {worst:.2e}")
    assert result["results"][MC]["acc,none"] == 1.0  # SmolLM2 knows these capitals


def test_generate_until_runs(remote_run: tuple[dict, int]) -> None:
    result, _ = remote_run
    answers = [sample["filtered_resps"][0] for sample in result["samples"][GEN]]
    assert len(answers) == len(TEST) and all(isinstance(a, str) and a for a in answers)
    assert not any("\n" in a or "." in a for a in answers)  # `until` stopped them
    assert result["results"][GEN]["exact_match,none"] >= 0.5


def test_the_few_shot_prefix_is_reused(remote_run: tuple[dict, int]) -> None:
    """Every request after the first finds the shared prefix's KV in the cache, whole pages of
    it: the server already knows that prefix's prompt logprobs and asks the scheduler only for
    the rest."""
    result, hits = remote_run
    requests = loglikelihood_requests(result)
    token_lists = [sum(encode_pair(c, x), []) for c, x, _, _ in requests]
    shared = shared_prefix_len(token_lists)
    assert shared > 3 * PAGE  # the description and two examples
    reused_per_request = (shared - 1) // PAGE * PAGE
    print(f"{len(requests)} requests sharing {shared} tokens: {hits} cache-hit tokens")
    assert hits >= (len(requests) - 1) * reused_per_request, (hits, shared, len(requests))


def test_string_prompts_in_batches_with_a_local_tokenizer(
    setup: Setup, remote_run: tuple[dict, int]
) -> None:
    """The same requests as strings (`tokenized_requests=False`), four prompts per request, two
    requests at a time, lm-eval tokenizing with a saved copy of the model's tokenizer."""
    args = (
        f"base_url={setup.url('/v1/completions')},tokenizer={setup.tokenizer_dir},"
        "tokenizer_backend=huggingface,tokenized_requests=False,batch_size=4,num_concurrent=2"
    )
    result = setup.evaluate("local-completions", [MC, GEN], args)
    expected, _ = remote_run
    got = loglikelihood_requests(result)
    for (context, continuation, loglikelihood, greedy), reference in zip(
        got, loglikelihood_requests(expected), strict=True
    ):
        assert (context, continuation) == reference[:2]
        assert loglikelihood == pytest.approx(reference[2], abs=LOGLIKELIHOOD_TOLERANCE)
        assert greedy == reference[3]
    answers = [s["filtered_resps"][0] for s in result["samples"][GEN]]
    assert answers == [s["filtered_resps"][0] for s in expected["samples"][GEN]]


def test_local_chat_completions_runs(setup: Setup) -> None:
    before = setup.cache_hits()
    result = setup.evaluate(
        "local-chat-completions",
        [GEN],
        f"base_url={setup.url('/v1/chat/completions')}",
        apply_chat_template=True,
        fewshot_as_multiturn=True,
    )
    answers = [sample["filtered_resps"][0] for sample in result["samples"][GEN]]
    assert len(answers) == len(TEST) and all(isinstance(a, str) and a for a in answers)
    assert "exact_match,none" in result["results"][GEN]
    # The system turn and the few-shot turns are the same in every conversation.
    assert setup.cache_hits() - before >= (len(TEST) - 1) * PAGE
