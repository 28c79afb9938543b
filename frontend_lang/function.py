"""`@rs.function` and the program's `run` / `run_batch`.

@rs.function
def qa(s, question):
    s += rs.user(question)
    s += rs.assistant(rs.gen("answer", max_tokens=64))

state = qa.run(question="...", temperature=0)
states = qa.run_batch([{"question": q} for q in questions], progress_bar=True)
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from .backend.base import (
    BaseBackend,
    ChoiceScores,
    GenOutput,
    StreamDelta,
    as_backend,
    get_default_backend,
)
from .chat_template import ChatTemplate
from .executor import StreamExecutor
from .state import ProgramState

MAX_AUTO_THREADS = 64


def function(
    func: Callable[..., Any] | None = None, **_options: Any
) -> SglFunction | Callable[[Callable[..., Any]], SglFunction]:
    """Decorator: `@rs.function` or `@rs.function(...)` (SGLang's options are accepted)."""
    if func is None:
        return SglFunction
    return SglFunction(func)


def sampling_defaults(
    max_new_tokens: int | None = 128,
    stop: str | list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    temperature: float | None = 1.0,
    top_p: float | None = 1.0,
    top_k: int | None = -1,
    min_p: float | None = 0.0,
    frequency_penalty: float | None = 0.0,
    presence_penalty: float | None = 0.0,
    ignore_eos: bool | None = False,
    seed: int | None = None,
) -> dict[str, Any]:
    """run()'s sampling arguments in the server's names; a gen()'s own arguments override them."""
    given = dict(locals())
    return {k: v for k, v in given.items() if v is not None}


_SAMPLING_ARGS = frozenset(inspect.signature(sampling_defaults).parameters)


class SglFunction:
    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside a program, `other(s, ...)` runs `other`'s body on the same state."""
        if args and isinstance(args[0], ProgramState):
            return self.func(*args, **kwargs)
        return self.run(*args, **kwargs)

    def run(
        self,
        *args: Any,
        stream: bool = False,
        backend: Any = None,
        **kwargs: Any,
    ) -> ProgramState:
        """Runs the program; raises its error (the server's message for a refused call).

        Keyword arguments named like `sampling_defaults`' set the default sampling parameters;
        the rest go to the program. With `stream=True` it returns at once and the program runs
        in the background: read `state.text_iter()`.
        """
        defaults, program_kwargs = _split_kwargs(kwargs)
        state = ProgramState(StreamExecutor(_backend(backend), defaults, stream=stream))
        if stream:
            threading.Thread(
                target=self._execute, args=(state, args, program_kwargs), daemon=True
            ).start()
            return state
        self._execute(state, args, program_kwargs)
        error = state.error()
        if error is not None:
            raise error
        return state

    def run_batch(
        self,
        batch_kwargs: Sequence[dict[str, Any]],
        *,
        num_threads: int | str = "auto",
        progress_bar: bool = False,
        precache: bool = True,
        backend: Any = None,
        **sampling: Any,
    ) -> list[ProgramState]:
        """Runs the program once per kwargs dict, concurrently; errors stay in `state.error()`.

        With `precache`, the first program runs alone until its first server call has finished,
        so the prefix the programs share (few-shot examples, instructions) is in the radix cache
        before the others arrive and is computed once instead of once per concurrent request.
        """
        defaults, extra = _split_kwargs(sampling)
        if extra:
            raise TypeError(f"run_batch got unexpected arguments {sorted(extra)}")
        if not batch_kwargs:
            return []
        backend_ = _backend(backend)
        total = len(batch_kwargs)
        workers = min(MAX_AUTO_THREADS, total) if num_threads == "auto" else int(num_threads)
        states: list[ProgramState | None] = [None] * total
        first_call = threading.Event()
        if not precache or total == 1:
            first_call.set()

        def one(index: int) -> None:
            # States are made as their turn comes, so a big batch holds `workers` threads.
            gated = index == 0 and not first_call.is_set()
            state_backend = _FirstCall(backend_, first_call) if gated else backend_
            state = states[index] = ProgramState(StreamExecutor(state_backend, defaults))
            try:
                self._execute(state, (), dict(batch_kwargs[index]))
            finally:
                if index == 0:
                    first_call.set()

        with (
            ThreadPoolExecutor(max(workers, 1)) as pool,
            tqdm(total=total, disable=not progress_bar, desc=self.func.__name__) as bar,
        ):
            futures = [pool.submit(one, 0)]
            first_call.wait()
            futures += [pool.submit(one, i) for i in range(1, total)]
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        return [s for s in states if s is not None]

    def _execute(self, state: ProgramState, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            state.ret_value = self.func(state, *args, **kwargs)
        except BaseException as exc:  # the state reports it; run() re-raises it
            state.executor.fail(exc)
        finally:
            state.executor.end()
        state.sync()


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    sampling = {k: v for k, v in kwargs.items() if k in _SAMPLING_ARGS}
    return sampling_defaults(**sampling), {
        k: v for k, v in kwargs.items() if k not in _SAMPLING_ARGS
    }


def _backend(backend: Any) -> BaseBackend:
    return as_backend(backend) if backend is not None else get_default_backend()


class _FirstCall(BaseBackend):
    """Passes calls through and sets `event` once the first of them has finished."""

    def __init__(self, inner: BaseBackend, event: threading.Event) -> None:
        self.inner = inner
        self.event = event

    def chat_template(self) -> ChatTemplate:
        return self.inner.chat_template()

    def generate(self, *args: Any, **kwargs: Any) -> GenOutput:
        try:
            return self.inner.generate(*args, **kwargs)
        finally:
            self.event.set()

    def generate_stream(self, *args: Any, **kwargs: Any) -> Iterator[StreamDelta]:
        try:
            yield from self.inner.generate_stream(*args, **kwargs)
        finally:
            self.event.set()

    def cache_prefix(self, prompt: str) -> dict[str, Any]:
        try:
            return self.inner.cache_prefix(prompt)
        finally:
            self.event.set()

    def score_choices(self, prompt: str, choices: Sequence[str]) -> ChoiceScores:
        try:
            return self.inner.score_choices(prompt, choices)
        finally:
            self.event.set()
