"""Echo + logprobs on /v1/completions (loglikelihood scoring): prompts that share a prefix reuse
the radix cache, and every logprob still equals a full recomputation (native /generate from
position 0, which never reads the prompt-logprob cache)."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.slow
FEW_SHOT = (
    "Answer each question with one word.\n\n"
    "Question: What colour is the sky on a clear day?\nAnswer: Blue\n\n"
    "Question: What colour is fresh snow?\nAnswer: White\n\n"
    "Question: What colour is grass?\nAnswer:"
)
STREAM_ECHO = {"max_tokens": 1, "logprobs": 1, "echo": True, "temperature": 0, "stream": True}
TOLERANCE = 1e-4  # the same model in another batch: float32 rounding only


def tokenize(client: httpx.Client, text: str) -> list[int]:
    return client.post("/tokenize", json={"prompt": text}).json()["tokens"]


def echo(client: httpx.Client, prompts: list[list[int]], k: int = 1, **extra: object) -> dict:
    body = {"prompt": prompts, "max_tokens": 1, "logprobs": k, "echo": True, "temperature": 0}
    reply = client.post("/v1/completions", json={**body, **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def recomputed(client: httpx.Client, ids: list[int], k: int) -> tuple[list, list]:
    """(logprob, top-k {token id: logprob}) per prompt token, computed from scratch."""
    reply = client.post(
        "/generate",
        json={
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 0},
            "return_logprob": True,
            "logprob_start_len": 0,
            "top_logprobs_num": k,
        },
    )
    meta = reply.json()["meta_info"]
    lps = [lp for lp, _, _ in meta["input_token_logprobs"]]
    tops = [None if t is None else {i: v for v, i, _ in t} for t in meta["input_top_logprobs"]]
    return lps, tops


def assert_close(got: list, want: list) -> None:
    assert len(got) == len(want)
    assert got[0] is None and want[0] is None
    assert max(abs(g - w) for g, w in zip(got[1:], want[1:], strict=True)) < TOLERANCE


def test_shared_prefix_is_reused_and_logprobs_stay_exact(client: httpx.Client) -> None:
    prefix = tokenize(client, FEW_SHOT)
    first, second = prefix + tokenize(client, " Green"), prefix + tokenize(client, " Purple")
    a = echo(client, [first])
    b = echo(client, [second])
    # The prefix's logprobs were known: its KV came from the cache, in whole 16-token pages.
    shared = len(prefix)
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] >= (shared - 1) // 16 * 16 - 16
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    for ids, reply in ((first, a), (second, b)):
        logprobs = reply["choices"][0]["logprobs"]
        assert len(logprobs["token_logprobs"]) == len(ids) + 1  # the prompt, then one new token
        want, _ = recomputed(client, ids, 1)
        assert_close(logprobs["token_logprobs"][:-1], want)
        tops = logprobs["top_logprobs"][1:-1]
        assert all(len(top) == 1 for top in tops)


def test_a_repeated_prompt_with_more_top_logprobs_gets_them(client: httpx.Client) -> None:
    ids = tokenize(client, FEW_SHOT + " Green, like leaves in summer.")
    echo(client, [ids], k=1)
    again = echo(client, [ids], k=1)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= len(ids) - 1 - 16
    more = echo(client, [ids], k=3)["choices"][0]["logprobs"]
    want, want_tops = recomputed(client, ids, 3)
    assert_close(more["token_logprobs"][:-1], want)
    assert all(len(top) == 3 for top in more["top_logprobs"][1:])
    tokens = more["tokens"]
    for position in (1, len(ids) // 2, len(ids) - 1):
        top = more["top_logprobs"][position]
        assert sorted(top.values()) == pytest.approx(sorted(want_tops[position].values()), abs=1e-4)
        assert tokens[position] in top or more["token_logprobs"][position] < min(top.values())


def test_a_batch_of_prompts_and_a_stream_agree_with_single_requests(client: httpx.Client) -> None:
    prefix = tokenize(client, FEW_SHOT)
    prompts = [prefix + tokenize(client, f" {word}") for word in ("Red", "Yellow", "Green")]
    batch = echo(client, prompts)["choices"]
    assert [c["index"] for c in batch] == [0, 1, 2]
    for choice, ids in zip(batch, prompts, strict=True):
        single = echo(client, [ids])["choices"][0]["logprobs"]["token_logprobs"]
        assert_close(choice["logprobs"]["token_logprobs"], single)
    with client.stream(
        "POST",
        "/v1/completions",
        json={**STREAM_ECHO, "prompt": prompts[0]},
    ) as reply:
        chunks = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]
    streamed = [lp for c in chunks for lp in c["choices"][0]["logprobs"]["token_logprobs"]]
    assert_close(streamed, batch[0]["logprobs"]["token_logprobs"])
