"""`@rs.function` and the program's `run` / `run_batch`.

@rs.function
def qa(s, question):
    s += rs.user(question)
    s += rs.assistant(rs.gen("answer", max_tokens=64))

state = qa.run(question="...", temperature=0)
states = qa.run_batch([{"question": q} for q in questions], progress_bar=True)

As in SGLang, a program body runs in the caller's thread and only enqueues its calls, so it
blocks only where it reads a variable. `run` then waits for the whole program; a `@function`
called without a state from inside another program (`other(topic=...)`) returns its state at
once, so several such calls run concurrently and only reading their variables waits.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from .backend.base import (
    BackendError,
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
# The program whose body runs in this thread (None outside any): a nested call inherits its
# backend and returns at once.
_running: contextvars.ContextVar[ProgramState | None] = contextvars.ContextVar(
    "radixserve_program", default=None
)


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
        # The program's own parameters (after the state), for run_batch's positional rows.
        self.arg_names = list(inspect.signature(func).parameters)[1:]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`other(s, ...)` runs `other`'s body on state `s`. Without a state it is a new
        program: inside a program it returns at once (SGLang's behaviour), elsewhere `run`."""
        if args and isinstance(args[0], ProgramState):
            return self.func(*args, **kwargs)
        outer = _running.get()
        if outer is None or kwargs.get("stream"):
            return self.run(*args, **kwargs)
        backend = kwargs.pop("backend", None) or outer.executor.backend
        defaults, program_kwargs = _split_kwargs(kwargs)
        state = ProgramState(StreamExecutor(as_backend(backend), defaults))
        error = self._execute(state, args, program_kwargs, wait=False)
        if error is not None and not isinstance(error, BackendError):
            raise error
        return state

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
        batch_kwargs: Sequence[dict[str, Any] | Sequence[Any]],
        *,
        num_threads: int | str = "auto",
        progress_bar: bool = False,
        precache: bool = True,
        backend: Any = None,
        **sampling: Any,
    ) -> list[ProgramState]:
        """Runs the program once per entry of `batch_kwargs` (a dict of arguments, or a list of
        them in the function's order), concurrently.

        A refused server call stays in that program's `state.error()`; the other programs are
        unaffected. Any other exception a program body raises is raised here once every program
        has ended (the first by position), as SGLang does. With `precache`, the first program
        runs alone until its first server call has finished, so the prefix the programs share
        (few-shot examples, instructions) is in the radix cache before the others arrive and is
        computed once instead of once per concurrent request.
        """
        defaults, extra = _split_kwargs(sampling)
        if extra:
            raise TypeError(f"run_batch got unexpected arguments {sorted(extra)}")
        if not batch_kwargs:
            return []
        rows = [self._as_kwargs(row) for row in batch_kwargs]
        backend_ = _backend(backend)
        total = len(rows)
        workers = _thread_count(num_threads, total)
        states: list[ProgramState | None] = [None] * total
        errors: list[BaseException | None] = [None] * total
        first_call = threading.Event()
        if not precache or total == 1:
            first_call.set()

        def one(index: int) -> None:
            # States are made as their turn comes, so a big batch holds `workers` threads.
            gated = index == 0 and not first_call.is_set()
            state_backend = _FirstCall(backend_, first_call) if gated else backend_
            state = states[index] = ProgramState(StreamExecutor(state_backend, defaults))
            try:
                errors[index] = self._execute(state, (), rows[index])
            finally:
                if index == 0:
                    first_call.set()

        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(total=total, disable=not progress_bar, desc=self.func.__name__) as bar,
        ):
            futures = [pool.submit(one, 0)]
            first_call.wait()
            futures += [pool.submit(one, i) for i in range(1, total)]
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        for error in errors:
            if error is not None and not isinstance(error, BackendError):
                raise error
        return [s for s in states if s is not None]

    def _as_kwargs(self, row: dict[str, Any] | Sequence[Any]) -> dict[str, Any]:
        if isinstance(row, dict):
            return dict(row)
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise TypeError(f"run_batch takes dicts or lists of arguments, got {row!r}")
        if len(row) > len(self.arg_names):
            raise TypeError(
                f"{self.func.__name__} takes {len(self.arg_names)} arguments, got {len(row)}"
            )
        return dict(zip(self.arg_names, row, strict=False))

    def _execute(
        self,
        state: ProgramState,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: bool = True,
    ) -> BaseException | None:
        """Runs the body in this thread, then ends the state (and waits for it with `wait`).
        Returns what the body raised, which the state also reports."""
        raised: BaseException | None = None
        token = _running.set(state)
        try:
            state.ret_value = self.func(state, *args, **kwargs)
        except BaseException as exc:  # the state reports it; the caller decides
            raised = exc
            state.executor.fail(exc)
        finally:
            _running.reset(token)
            state.executor.end()
        if wait:
            state.sync()
        return raised


def _thread_count(num_threads: int | str, total: int) -> int:
    if num_threads == "auto":
        return min(MAX_AUTO_THREADS, total)
    count = int(num_threads)
    if count < 1:
        raise ValueError(f"num_threads must be >= 1 or 'auto', got {num_threads!r}")
    return min(count, total)


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

    def score_choices(
        self, prompt: str, choices: Sequence[str], unconditional: bool = False
    ) -> ChoiceScores:
        try:
            return self.inner.score_choices(prompt, choices, unconditional)
        finally:
            self.event.set()
