"""The backend seam: what the interpreter needs from a model server, and the default backend.

A backend works on text prompts: the interpreter sends the whole text of a state with each call,
so the server's radix cache sees every shared prefix (the previous turns, the few-shot examples,
a fork's parent) without the DSL tracking tokens.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..chat_template import ChatTemplate


class BackendError(RuntimeError):
    """A call to the backend failed; the message is the server's own when it sent one."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(slots=True)
class GenOutput:
    text: str
    meta_info: dict[str, Any]


@dataclass(slots=True)
class StreamDelta:
    text: str  # new text since the previous delta
    meta_info: dict[str, Any] | None = None  # set on the last delta


@dataclass(slots=True)
class ChoiceScores:
    """Per choice, the logprobs of the tokens that the choice adds after the prompt; with
    `unconditional`, also those tokens' logprobs with no prompt before them (the first one has
    none: 0.0)."""

    token_logprobs: list[list[float]]
    prompt_meta: dict[str, Any]
    choice_metas: list[dict[str, Any]] = field(default_factory=list)
    unconditional_logprobs: list[list[float]] | None = None


class BaseBackend(ABC):
    """Contract: every method is safe to call from many threads at once (one per program state),
    and raises `BackendError` with a readable message when the server refuses or is gone."""

    @abstractmethod
    def chat_template(self) -> ChatTemplate:
        """The served model's role wrappings."""

    @abstractmethod
    def generate(
        self,
        prompt: str,
        sampling: dict[str, Any],
        return_logprob: bool = False,
        top_logprobs_num: int = 0,
    ) -> GenOutput:
        """Generates a continuation of `prompt`; `sampling` uses the server's parameter names."""

    @abstractmethod
    def generate_stream(self, prompt: str, sampling: dict[str, Any]) -> Iterator[StreamDelta]:
        """Like `generate`, yielding text as it is produced; the last delta carries meta_info."""

    @abstractmethod
    def cache_prefix(self, prompt: str) -> dict[str, Any]:
        """Computes `prompt` into the server's prefix cache (no new tokens); returns meta_info."""

    @abstractmethod
    def score_choices(
        self, prompt: str, choices: Sequence[str], unconditional: bool = False
    ) -> ChoiceScores:
        """Token logprobs of each choice as a continuation of `prompt`, prompt computed once;
        `unconditional` also scores each choice's tokens alone."""

    def flush_cache(self) -> None:
        """Drops the server's prefix cache (for benchmarks); a no-op where there is none."""
        return None

    def get_server_info(self) -> dict[str, Any]:
        """The server's configuration and state, as its /get_server_info reports them."""
        raise NotImplementedError(f"{type(self).__name__} reports no server info")

    def shutdown(self) -> None:
        """Releases what the backend holds (connections, a server process)."""
        return None


_default_backend: BaseBackend | None = None
_default_lock = threading.Lock()


def as_backend(backend: Any) -> BaseBackend:
    """Accepts a backend or anything with an `.endpoint` backend (a `Runtime`)."""
    if isinstance(backend, BaseBackend):
        return backend
    endpoint = getattr(backend, "endpoint", None)
    if isinstance(endpoint, BaseBackend):
        return endpoint
    raise TypeError(f"{type(backend).__name__} is not a radixserve backend")


def set_default_backend(backend: Any) -> None:
    global _default_backend
    with _default_lock:
        _default_backend = None if backend is None else as_backend(backend)


def get_default_backend() -> BaseBackend:
    if _default_backend is None:
        raise RuntimeError(
            "no backend: call rs.set_default_backend(rs.RuntimeEndpoint(url)) or pass backend="
        )
    return _default_backend


def flush_cache(backend: Any = None) -> None:
    """Drops the prefix cache of `backend` (default: the default backend), like SGLang's."""
    (get_default_backend() if backend is None else as_backend(backend)).flush_cache()


def get_server_info(backend: Any = None) -> dict[str, Any]:
    """/get_server_info of `backend` (default: the default backend), like SGLang's."""
    return (get_default_backend() if backend is None else as_backend(backend)).get_server_info()
