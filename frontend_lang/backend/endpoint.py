"""`RuntimeEndpoint`: a backend over a radixserve (or SGLang) server's HTTP API.

    backend = rs.RuntimeEndpoint("http://127.0.0.1:30000", api_key=None)

Calls go to POST /generate with text prompts. `select` scores every choice in one batch request
after a zero-token request has put the shared prompt into the radix cache.

Reads have no time-out by default (SGLang's endpoint has none either): on a busy server one
call of a long program may wait in the queue for a long time, and giving up would end the
program while the server still computes its request. Connecting has a short time-out.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from ..chat_template import CHATML, ChatTemplate, ChatTemplateError
from .base import (
    BackendError,
    BaseBackend,
    ChoiceScores,
    GenOutput,
    StreamDelta,
)

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S: float | None = None  # no limit on waiting for an answer
CONNECT_TIMEOUT_S = 10.0


class RuntimeEndpoint(BaseBackend):
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        chat_template: ChatTemplate | str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One pooled client for all program threads (httpx clients are thread-safe).
        self.client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self.model_info: dict[str, Any] = self._request("GET", "/get_model_info")
        self._template = (
            ChatTemplate.from_jinja(chat_template, source="the given template")
            if isinstance(chat_template, str)
            else chat_template
        )

    # --- BaseBackend ---------------------------------------------------------------------------

    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            self._template = self._find_template()
        return self._template

    def generate(
        self,
        prompt: str,
        sampling: dict[str, Any],
        return_logprob: bool = False,
        top_logprobs_num: int = 0,
    ) -> GenOutput:
        payload: dict[str, Any] = {"text": prompt, "sampling_params": sampling}
        if return_logprob:
            payload |= {"return_logprob": True, "top_logprobs_num": top_logprobs_num}
        out = self._request("POST", "/generate", payload)
        return GenOutput(out["text"], out["meta_info"])

    def generate_stream(self, prompt: str, sampling: dict[str, Any]) -> Iterator[StreamDelta]:
        payload = {"text": prompt, "sampling_params": sampling, "stream": True}
        emitted = ""
        meta: dict[str, Any] | None = None
        for chunk in self._stream_chunks(payload):
            # Each chunk carries the whole text so far; hand out only what is new.
            text = chunk.get("text", "")
            delta = text[len(emitted) :] if text.startswith(emitted) else text
            emitted = text
            meta = chunk.get("meta_info", meta)
            if delta:
                yield StreamDelta(delta)
        yield StreamDelta("", meta or {})

    def cache_prefix(self, prompt: str) -> dict[str, Any]:
        out = self._request(
            "POST", "/generate", {"text": prompt, "sampling_params": {"max_new_tokens": 0}}
        )
        return out["meta_info"]

    def score_choices(
        self, prompt: str, choices: Sequence[str], unconditional: bool = False
    ) -> ChoiceScores:
        prompt_meta = self.cache_prefix(prompt) if prompt else {"prompt_tokens": 0}
        # Score from the prompt's last token: if a choice merges with the prompt's tail in
        # tokenization, the merged token is then scored too. The plain prompt rides along in the
        # batch to tell which choices kept the prompt's last token unchanged.
        #   prompt:          t0 ... t[P-2] | t[P-1]
        #   prompt + choice: t0 ... t[P-2] | t[P-1] c0 c1 ...   (unchanged: drop t[P-1])
        #                    t0 ... t[P-2] | m c1 ...           (merged: keep m)
        start = max(int(prompt_meta["prompt_tokens"]) - 1, 0)
        texts = ([prompt] if prompt else []) + [prompt + c for c in choices]
        payload = {
            "text": texts,
            "sampling_params": {"max_new_tokens": 0},
            "return_logprob": True,
            "logprob_start_len": start,
        }
        outs = self._request("POST", "/generate", payload)
        metas = [o["meta_info"] for o in outs]
        anchor = metas[0]["input_token_logprobs"][0][1] if prompt else None
        choice_metas = metas[len(texts) - len(choices) :]
        entries = [choice_entries(m["input_token_logprobs"], anchor) for m in choice_metas]
        scores = ChoiceScores(
            [[float(e[0]) for e in es] for es in entries], prompt_meta, choice_metas
        )
        if unconditional:
            scores.unconditional_logprobs = self._unconditional(
                [[e[1] for e in es] for es in entries]
            )
        return scores

    def _unconditional(self, token_ids: list[list[int]]) -> list[list[float]]:
        """Each choice's tokens scored alone (as SGLang does: the ids, no BOS, no prompt)."""
        asked = [ids for ids in token_ids if ids]  # the server refuses an empty prompt
        payload = {
            "input_ids": asked,
            "sampling_params": {"max_new_tokens": 0},
            "return_logprob": True,
            "logprob_start_len": 0,
        }
        outs = iter(self._request("POST", "/generate", payload) if asked else [])
        return [
            [
                0.0 if e[0] is None else float(e[0])
                for e in next(outs)["meta_info"]["input_token_logprobs"]
            ]
            if ids
            else []
            for ids in token_ids
        ]

    def get_server_info(self) -> dict[str, Any]:
        return self._request("GET", "/get_server_info")

    def flush_cache(self) -> None:
        self._request("POST", "/flush_cache", None)

    def shutdown(self) -> None:
        self.client.close()

    # --- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        try:
            response = self.client.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the server at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise BackendError(error_message(response), response.status_code)
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise BackendError(f"{path} answered with a body that is not JSON") from exc

    def _stream_chunks(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            with self.client.stream("POST", "/generate", json=payload) as response:
                if response.status_code >= 400:
                    response.read()
                    raise BackendError(error_message(response), response.status_code)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise BackendError(_message_of(chunk) or str(chunk))
                    yield chunk
        except httpx.HTTPError as exc:
            raise BackendError(f"stream from {self.base_url} broke: {exc}") from exc

    def _find_template(self) -> ChatTemplate:
        info = self.model_info
        tokens = {k: info.get(k) or "" for k in ("bos_token", "eos_token")}
        if info.get("chat_template"):
            return ChatTemplate.from_jinja(info["chat_template"], tokens, source="the server")
        local = _local_template(info.get("model_path"), info.get("tokenizer_path"))
        if local is not None:
            return local
        logger.warning("the server reports no chat template; using ChatML")
        return CHATML


def choice_entries(entries: Sequence[Sequence[Any]], anchor: int | None) -> list[Sequence[Any]]:
    """The (logprob, token id, ...) entries of a choice's tokens from `input_token_logprobs` that
    start at the prompt's last position; `anchor` is the prompt's own last token id there (None:
    no prompt, so position 0 has no logprob and is dropped)."""
    if anchor is not None and entries and entries[0][1] == anchor:
        entries = entries[1:]
    return [e for e in entries if e[0] is not None]


def choice_logprobs(entries: Sequence[Sequence[Any]], anchor: int | None) -> list[float]:
    """The logprobs of `choice_entries`."""
    return [float(e[0]) for e in choice_entries(entries, anchor)]


def error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError):
        return f"HTTP {response.status_code}: {response.text.strip()[:500]}"
    message = _message_of(body)
    return f"HTTP {response.status_code}: {message or json.dumps(body)[:500]}"


def _message_of(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return error.get("message")
    if isinstance(error, str):
        return error
    return body.get("message") or body.get("detail")


def _local_template(model_path: str | None, tokenizer_path: str | None) -> ChatTemplate | None:
    """The template in the tokenizer files, when the server's model is an HF directory on this
    machine (a server that does not report its template, such as SGLang's). Reads the files
    directly: the DSL never imports the runtime."""
    for directory in (tokenizer_path, model_path):
        if not directory or not os.path.isdir(directory):
            continue
        found = read_template_files(directory)
        if found is None:
            continue
        template, tokens = found
        try:
            return ChatTemplate.from_jinja(template, tokens, source=directory)
        except ChatTemplateError as exc:
            logger.warning("cannot use the local chat template: %s", exc)
            return None
    return None


def read_template_files(directory: str) -> tuple[str, dict[str, str]] | None:
    """(chat template, {bos_token, eos_token}) from an HF tokenizer directory: the template from
    chat_template.jinja or tokenizer_config.json (its "default" entry when it holds several)."""
    config: dict[str, Any] = {}
    config_path = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    jinja_path = os.path.join(directory, "chat_template.jinja")
    template: Any = None
    if os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            template = f.read()
    else:
        template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        return None
    return template, {key: _token_text(config.get(key)) for key in ("bos_token", "eos_token")}


def _token_text(value: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""
