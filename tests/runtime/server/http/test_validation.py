"""Every malformed request gets a 4xx whose message (and `param`) names the field; the server
stays healthy afterwards. Also the API key and the body-size limit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from radixserve.runtime.server.http.config import HttpConfig
from tests.runtime.server.http.conftest import ServerProcess

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "hi"}]
CONTEXT_LEN = 8192  # SmolLM2's
VOCAB = 49152

# (path, body, status, field named in the message and param)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    # native /generate
    ("/generate", {"text": ""}, 400, "text"),
    ("/generate", {"input_ids": []}, 400, "input_ids"),
    ("/generate", {"text": 5}, 400, "text"),
    ("/generate", {"input_ids": [1, VOCAB]}, 400, "input_ids"),
    ("/generate", {"input_ids": [-1]}, 400, "input_ids"),
    ("/generate", {"input_ids": [1] * (CONTEXT_LEN + 5)}, 400, "input_ids"),
    ("/generate", {"text": "hi", "sampling_params": {"max_new_tokens": -1}}, 400, "max_new_tokens"),
    ("/generate", {"text": "hi", "sampling_params": {"temperature": -0.5}}, 400, "temperature"),
    ("/generate", {"text": "hi", "sampling_params": {"top_p": 0}}, 400, "top_p"),
    ("/generate", {"text": "hi", "sampling_params": {"top_p": 1.5}}, 400, "top_p"),
    ("/generate", {"text": "hi", "sampling_params": {"top_k": -2}}, 400, "top_k"),
    ("/generate", {"text": "hi", "sampling_params": {"n": 0}}, 400, "n"),
    (
        "/generate",
        {"text": "hi", "sampling_params": {"max_new_tokens": "8"}},
        400,
        "max_new_tokens",
    ),
    ("/generate", {"text": "hi", "sampling_params": {"bogus": 1}}, 400, "bogus"),
    ("/generate", {"text": "hi", "bogus": 1}, 400, "bogus"),
    ("/generate", {}, 400, "text"),
    ("/generate", {"text": ["a", "b"], "rid": ["x"]}, 400, "rid"),
    ("/generate", {"text": "hi", "logprob_start_len": 99}, 400, "logprob_start_len"),
    ("/abort_request", {}, 400, "rid"),
    # OpenAI completions
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": [1, "a"]}, 400, "prompt"),
    ("/v1/completions", {"prompt": [[1, VOCAB]]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi " * (CONTEXT_LEN + 10)}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -1}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"prompt": "hi", "top_p": 1.01}, 400, "top_p"),
    ("/v1/completions", {"prompt": "hi", "top_k": -5}, 400, "top_k"),
    ("/v1/completions", {"prompt": "hi", "n": 0}, 400, "n"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "logprobs": -1}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "hi", "stop": [""]}, 400, "stop"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi", "model": "gpt-9"}, 404, "model"),
    # OpenAI chat
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": -3}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": CHAT, "temperature": -2}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": CHAT, "n": 0}, 400, "n"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "model": "nope"}, 404, "model"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    (
        "/v1/chat/completions",
        {"messages": [*CHAT, {"role": "assistant"}, {"role": "user", "content": "and?"}]},
        400,
        "messages[1].content",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi " * (CONTEXT_LEN + 10)}]},
        400,
        "messages",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "field"), CASES)
def test_bad_request_names_the_field(
    client: httpx.Client, path: str, body: dict[str, Any], status: int, field: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert field in error["message"] or field == error["param"], error
    if status == 400:
        assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/generate", "/v1/completions", "/v1/chat/completions"])
def test_bad_json_and_empty_body(client: httpx.Client, path: str) -> None:
    broken = client.post(
        path, content=b'{"text": "hi",', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    assert client.post(path, content=b"").status_code == 400
    assert client.post(path, json=[1, 2]).status_code == 400  # not an object


def test_streaming_request_refused_up_front(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"prompt": "", "stream": True})
    assert response.status_code == 400
    response = client.post(
        "/generate", json={"text": "hi", "stream": True, "sampling_params": {"top_p": 2}}
    )
    assert response.status_code == 400


def test_oversized_body_is_413(client: httpx.Client) -> None:
    limit = HttpConfig().max_body_bytes
    body = b'{"text": "' + b"a" * (limit + 1024) + b'"}'
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert str(limit) in response.json()["error"]["message"]


def test_api_key_is_required_except_for_health(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for method, path in [
            ("GET", "/v1/models"),
            ("GET", "/metrics"),
            ("GET", "/get_server_info"),
            ("POST", "/generate"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/flush_cache"),
        ]:
            response = anonymous.request(method, path, json={"text": "hi"})
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "authentication_error"
        wrong = anonymous.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_unknown_path_and_method(client: httpx.Client) -> None:
    assert client.get("/no/such/path").status_code == 404
    embeddings = client.post("/v1/embeddings", json={"input": "hi"})  # sglang-router forwards it
    assert embeddings.status_code == 404
    assert "/v1/embeddings" in embeddings.json()["error"]["message"]
    assert "/generate" in embeddings.json()["error"]["message"]
    assert client.get("/generate").status_code == 405
    assert "error" in client.get("/generate").json()


def test_server_is_healthy_after_bad_requests(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/health_generate").status_code == 200
    out = client.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2}})
    assert out.status_code == 200 and out.json()["meta_info"]["completion_tokens"] == 2
