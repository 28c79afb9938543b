"""A scripted in-process backend for interpreter unit tests (no server, no model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from radixserve.frontend_lang.backend.base import (
    BackendError,
    BaseBackend,
    ChoiceScores,
    GenOutput,
    StreamDelta,
)
from radixserve.frontend_lang.chat_template import ChatTemplate

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class FakeBackend(BaseBackend):
    """Answers `reply(prompt)`; a prompt containing "FAIL" gets a 400 like the server's."""

    def __init__(self, reply: Any = None, delay_s: float = 0.0) -> None:
        self.reply = reply or (lambda prompt: f"[{len(prompt)}]")
        self.delay_s = delay_s
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (kind, prompt, sampling)
        self.lock = threading.Lock()
        self.template = ChatTemplate.from_jinja(SMOLLM2_TEMPLATE)
        # Set to (conditional, unconditional) token logprobs to script select's scores.
        self.scores: tuple[list[list[float]], list[list[float]]] | None = None

    def _record(self, kind: str, prompt: str, sampling: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.calls.append((kind, prompt, dict(sampling or {})))
        time.sleep(self.delay_s)
        if "FAIL" in prompt:
            raise BackendError("HTTP 400: temperature must be >= 0, got -1", 400)

    def chat_template(self) -> ChatTemplate:
        return self.template

    def generate(
        self,
        prompt: str,
        sampling: dict[str, Any],
        return_logprob: bool = False,
        top_logprobs_num: int = 0,
    ) -> GenOutput:
        self._record("generate", prompt, sampling)
        return GenOutput(self.reply(prompt), {"prompt_tokens": len(prompt), "cached_tokens": 0})

    def generate_stream(self, prompt: str, sampling: dict[str, Any]) -> Iterator[StreamDelta]:
        self._record("stream", prompt, sampling)
        for word in self.reply(prompt).split(" "):
            yield StreamDelta(word + " ")
        yield StreamDelta("", {"prompt_tokens": len(prompt)})

    def cache_prefix(self, prompt: str) -> dict[str, Any]:
        self._record("cache_prefix", prompt)
        return {"prompt_tokens": len(prompt)}

    def score_choices(
        self, prompt: str, choices: Sequence[str], unconditional: bool = False
    ) -> ChoiceScores:
        self._record("score", prompt, {"unconditional": unconditional})
        if self.scores is not None:
            conditional, alone = self.scores
            return ChoiceScores(
                conditional, {"prompt_tokens": 1}, [], alone if unconditional else None
            )
        # Longer choices score higher per token; ties impossible for distinct lengths. Alone,
        # every token scores -1.
        return ChoiceScores(
            [[-1.0 / len(c)] * len(c) for c in choices],
            {"prompt_tokens": 1},
            [],
            [[-1.0] * len(c) for c in choices] if unconditional else None,
        )
