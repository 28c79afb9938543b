"""/tokenize, /detokenize and /tokenizer_info on a real server: the served model's tokenizer."""

from __future__ import annotations

import httpx
import pytest

from tests.runtime.smollm2 import smollm2_tokenizer

pytestmark = pytest.mark.slow
TEXT = "<|im_start|>The capital of France is Paris."


def test_tokenize_matches_the_models_tokenizer(client: httpx.Client) -> None:
    tokenizer = smollm2_tokenizer()
    for special in (True, False):
        reply = client.post("/tokenize", json={"prompt": TEXT, "add_special_tokens": special})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["tokens"] == tokenizer.encode(TEXT, add_special_tokens=special)
        assert body["tokens"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
        assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 8192


def test_tokenize_a_batch(client: httpx.Client) -> None:
    reply = client.post("/tokenize", json={"prompt": ["Hello", "Hello world"]})
    body = reply.json()
    assert reply.status_code == 200 and len(body["tokens"]) == 2
    assert body["count"] == [len(t) for t in body["tokens"]]
    assert body["tokens"][1][: len(body["tokens"][0])] == body["tokens"][0]


def test_detokenize_round_trips(client: httpx.Client) -> None:
    ids = client.post("/tokenize", json={"prompt": TEXT}).json()["tokens"]
    reply = client.post("/detokenize", json={"tokens": ids})
    assert reply.status_code == 200
    assert reply.json() == {"prompt": TEXT, "text": TEXT}  # vLLM's and SGLang's names
    plain = client.post("/detokenize", json={"tokens": ids, "skip_special_tokens": True}).json()
    assert plain["text"] == "The capital of France is Paris."
    assert client.post("/detokenize", json={"tokens": []}).json()["text"] == ""


def test_tokenizer_info_names_the_special_tokens_and_template(client: httpx.Client) -> None:
    reply = client.get("/tokenizer_info")
    assert reply.status_code == 200
    info = reply.json()
    assert info["eos_token"] == "<|im_end|>" and info["bos_token"] == "<|im_start|>"
    assert "<|im_start|>" in info["chat_template"] and info["model_max_length"] == 8192


def test_bad_requests_name_the_field(client: httpx.Client) -> None:
    reply = client.post("/detokenize", json={"tokens": [1, 10**9]})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "tokens" and "outside the vocabulary" in error["message"]
    reply = client.post("/tokenize", json={"prompt": 5})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt"
    reply = client.post("/tokenize", json={"prompt": "x", "model": "other"})
    assert reply.status_code == 404 and reply.json()["error"]["param"] == "model"
