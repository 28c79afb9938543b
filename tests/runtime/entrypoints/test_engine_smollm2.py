"""The offline Engine on the embedded SmolLM2: parity with HF generate, chat, sampling, errors."""

from __future__ import annotations

import pytest
import torch

from radixserve.runtime.entrypoints.engine import Engine
from radixserve.runtime.server.request_builder import InvalidRequestError
from tests.runtime.smollm2 import chat_prompt

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "1, 2, 3, 4, 5,",
    "Water boils at a temperature of",
    "To make a cup of tea, first",
    "The quick brown fox",
]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def engine():
    eng = Engine(page_size=16, max_total_tokens=32768)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModelForCausalLM

    from radixserve.runtime.config.model_source import resolve_model_source

    source = resolve_model_source(None)
    model = AutoModelForCausalLM.from_pretrained(
        source.directory, gguf_file=source.gguf_file, dtype=torch.float32
    )
    return model.eval()


def hf_greedy(hf_model, engine: Engine, prompt: str) -> list[int]:
    """HF generate's NEW_TOKENS greedy tokens after `prompt` (EOS ignored)."""
    ids = engine.tokenizer.encode(prompt)
    with torch.no_grad():
        out = hf_model.generate(
            torch.tensor([ids]),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=engine.tokenizer.eos_token_id,
        )
    return out[0, len(ids) :].tolist()


def test_greedy_batch_matches_hf_generate(engine: Engine, hf_model) -> None:
    greedy = {"temperature": 0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True}
    outs = engine.generate(PROMPTS, greedy)
    assert isinstance(outs, list) and len(outs) == len(PROMPTS)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        ref = hf_greedy(hf_model, engine, prompt)
        assert out["output_ids"] == ref, f"{prompt!r}: {out['text']!r}"
        assert out["text"] == engine.tokenizer.decode(ref, skip_special_tokens=True)
        assert out["meta_info"]["completion_tokens"] == NEW_TOKENS
        assert out["meta_info"]["finish_reason"] == {"type": "length", "matched": None}


def test_single_prompts_over_gguf_blocks_match_hf_generate(engine: Engine, hf_model) -> None:
    """One prompt at a time: every decode product has one row, so the layers read the GGUF's
    Q4_1 blocks and the LM head its Q8_0 blocks (model_loader/gguf_blocks.py), and greedy
    tokens are still HF generate's over the float32 dequantization."""
    from radixserve.runtime.model_executor.model_runner import ModelRunner
    from radixserve.runtime.model_executor.models.layers.embedding import ParallelLMHead
    from radixserve.runtime.model_executor.models.layers.linear import LinearBase

    runner = engine.state.runner
    assert isinstance(runner, ModelRunner)
    model = runner.model
    with_blocks = [
        m for m in model.modules() if isinstance(m, LinearBase | ParallelLMHead) and m.blocks
    ]
    assert len(with_blocks) == 4 * model.config.num_layers + 1  # qkv, o, gate_up, down; head
    greedy = {"temperature": 0, "max_new_tokens": NEW_TOKENS, "ignore_eos": True}
    for prompt in PROMPTS[:2]:
        out = engine.generate(prompt, greedy)
        ref = hf_greedy(hf_model, engine, prompt)
        assert out["output_ids"] == ref, f"{prompt!r}: {out['text']!r}"


def test_chat_answer_names_paris(engine: Engine) -> None:
    ids = engine.builder.encode_chat(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    out = engine.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": 30})
    assert "Paris" in out["text"]
    assert out["meta_info"]["finish_reason"]["type"] == "stop"  # ended by <|im_end|>


def test_repeated_prompt_reports_cached_tokens(engine: Engine) -> None:
    prompt = "A long shared instruction. " * 20 + "Question: what is two plus two?"
    first = engine.generate(prompt, {"temperature": 0, "max_new_tokens": 4})
    second = engine.generate(prompt, {"temperature": 0, "max_new_tokens": 4})
    assert second["meta_info"]["cached_tokens"] >= second["meta_info"]["prompt_tokens"] - 16
    assert first["output_ids"] == second["output_ids"]


def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    params = {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 12, "seed": 1234}
    a = engine.generate("Tell me a story about", params)
    b = engine.generate("Tell me a story about", params)
    c = engine.generate("Tell me a story about", {**params, "seed": 99})
    assert a["output_ids"] == b["output_ids"]
    assert a["output_ids"] != c["output_ids"]


def test_stop_string_and_stream(engine: Engine) -> None:
    params = {"temperature": 0, "max_new_tokens": 20, "ignore_eos": True}
    full = engine.generate("1, 2, 3, 4, 5,", params)["text"]
    assert "8" in full
    counters = engine.scheduler.counters
    finished, aborted = counters.requests_finished, counters.requests_aborted
    stopped = engine.generate("1, 2, 3, 4, 5,", {**params, "stop": "8"})
    assert stopped["text"] == full[: full.index("8")]
    assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": "8"}
    # As in the server: the scheduler stops it and counts it finished, not aborted.
    assert (counters.requests_finished, counters.requests_aborted) == (finished + 1, aborted)
    assert not engine.scheduler.has_work and not engine._detokenizer.states
    chunks = list(engine.generate("1, 2, 3, 4, 5,", params, stream=True))
    assert "".join(c["text"] for c in chunks) == full
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"


def test_prompt_logprobs_match_hf(engine: Engine, hf_model) -> None:
    prompt = "The capital of France is Paris."
    out = engine.generate(prompt, {"temperature": 0, "max_new_tokens": 1}, logprob_start_len=0)
    ids = engine.tokenizer.encode(prompt)
    entries = out["meta_info"]["input_token_logprobs"]
    assert [e[1] for e in entries] == ids and entries[0][0] is None
    with torch.no_grad():
        logp = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].float(), -1)
    expected = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert [e[0] for e in entries[1:]] == pytest.approx(expected, abs=1e-3)
    assert len(out["meta_info"]["output_token_logprobs"]) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "empty"),
        ({"input_ids": []}, "empty"),
        ({"input_ids": [1, 2, 49152]}, "outside the vocabulary"),
        ({"input_ids": [1, -3]}, "outside the vocabulary"),
        ({"input_ids": [1] * 9000}, "context length"),
        ({"prompt": "hi", "sampling_params": {"max_new_tokens": -1}}, "max_new_tokens"),
        ({"prompt": "hi", "sampling_params": {"temperature": -0.5}}, "temperature"),
        ({"prompt": "hi", "sampling_params": {"top_p": 0}}, "top_p"),
        ({"prompt": "hi", "sampling_params": {"bogus": 1}}, "bogus"),
    ],
)
def test_bad_input_is_a_clear_error(engine: Engine, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        engine.generate(**kwargs)
    # Nothing leaked: the engine still answers and holds no request.
    assert not engine.scheduler.has_work
    out = engine.generate("Hello", {"temperature": 0, "max_new_tokens": 2})
    assert out["meta_info"]["completion_tokens"] == 2


def test_min_new_tokens_holds_back_eos_and_logit_bias_steers(engine: Engine) -> None:
    prompt = chat_prompt(engine.tokenizer, "Say hi.")
    free = engine.generate(prompt, {"temperature": 0, "max_new_tokens": 64})
    n = free["meta_info"]["completion_tokens"]
    assert free["meta_info"]["finish_reason"]["type"] == "stop"
    params = {"temperature": 0, "max_new_tokens": n + 24, "min_new_tokens": n + 8}
    held = engine.generate(prompt, params)
    assert held["meta_info"]["completion_tokens"] >= n + 8
    # Identical up to the EOS that ended the free run (its last output id), then longer.
    assert held["output_ids"][: n - 1] == free["output_ids"][: n - 1]
    assert held["output_ids"][n - 1] != free["output_ids"][n - 1]
    first = free["output_ids"][0]
    steered = engine.generate(
        prompt, {"temperature": 0, "max_new_tokens": 1, "logit_bias": {first: -100.0}}
    )
    assert steered["output_ids"][0] != first
