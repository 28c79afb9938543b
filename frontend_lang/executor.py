"""The interpreter of one program state: a queue of expressions run in order on a worker thread.

`s += expr` only enqueues, so a program keeps going until it reads a variable; that is what
lets forked branches (each with its own executor) and `run_batch` programs reach the server
together and share a batch. Text appended between calls is kept locally and travels with the next
call, whose prompt is the state's whole text: the server's radix cache matches every prefix.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .backend.base import BaseBackend
from .chat_template import ChatTemplate
from .choices import decision_meta
from .ir import (
    Expr,
    Gen,
    RoleBegin,
    RoleEnd,
    Select,
    SetVar,
    Text,
    VarScopeBegin,
    VarScopeEnd,
    named_outputs,
)


class ProgramError(RuntimeError):
    """A program misused the DSL (nested roles, a missing variable ...)."""


@dataclass(slots=True)
class Chunk:
    text: str
    var: str | None  # the variable this text belongs to (None: prompt text)


@dataclass(slots=True)
class Snapshot:
    """What a fork copies from its parent."""

    text: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)
    role: str | None = None
    role_start: int = 0


class StreamExecutor:
    def __init__(
        self,
        backend: BaseBackend,
        defaults: dict[str, Any],
        stream: bool = False,
        snapshot: Snapshot | None = None,
    ) -> None:
        self.backend = backend
        self.defaults = defaults  # run()'s sampling defaults, server names
        self.stream = stream
        base = snapshot or Snapshot()
        self.text_ = base.text
        self.messages_ = [dict(m) for m in base.messages]
        self.variables = dict(base.variables)
        self.meta_info = dict(base.meta_info)
        self.role, self.role_start = base.role, base.role_start
        self.scope_starts: dict[str, int] = {}  # open var scopes: name -> text position
        self.error_: BaseException | None = None
        self.events: dict[str, threading.Event] = {}
        self.chunks: list[Chunk] = []
        self.changed = threading.Condition()
        self.finished = False  # end() was called
        self.stopped = False  # the worker has run everything and quit
        self._template: ChatTemplate | None = None
        self.children: list[StreamExecutor] = []  # forks, ended with this state
        self.queue: queue.Queue[Expr | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, daemon=True, name="rs-program")
        self.worker.start()

    # --- the program's side --------------------------------------------------------------------

    def submit(self, expr: Expr) -> None:
        if self.finished:
            raise ProgramError("this state has ended; it takes no more expressions")
        for name in named_outputs(expr):
            self.events.setdefault(name, threading.Event()).clear()
        self.queue.put(expr)

    def sync(self) -> None:
        self.queue.join()

    def end(self) -> None:
        """No more expressions: the worker finishes the queue, then stops."""
        if not self.finished:
            self.finished = True
            self.queue.put(None)
        for child in self.children:
            child.end()

    def wait_for(self, name: str) -> None:
        """Until the variable's pending producer has run (everything queued, when none is)."""
        event = self.events.get(name)
        if event is not None:
            event.wait()
        else:
            self.sync()

    def get_var(self, name: str) -> Any:
        self.wait_for(name)
        if name in self.variables:
            return self.variables[name]
        if self.error_ is not None:
            raise self.error_
        raise KeyError(f"the program has no variable {name!r}")

    def snapshot(self) -> Snapshot:
        self.sync()
        if self.error_ is not None:
            raise self.error_
        return Snapshot(
            self.text_,
            self.messages_,
            self.variables,
            self.meta_info,
            self.role,
            self.role_start,
        )

    def fail(self, error: BaseException) -> None:
        """Records the program's first error and wakes everyone waiting on it."""
        if self.error_ is None:
            self.error_ = error
        for event in self.events.values():
            event.set()
        with self.changed:
            self.changed.notify_all()

    def iter_chunks(self, var: str | None = None) -> Iterator[str]:
        """Text as it is appended (only `var`'s when given), until the state ends."""
        seen = 0
        while True:
            with self.changed:
                while seen == len(self.chunks) and not self._done():
                    self.changed.wait()
                fresh, seen = self.chunks[seen:], len(self.chunks)
                done = self._done() and seen == len(self.chunks)
            for chunk in fresh:
                if chunk.text and (var is None or chunk.var == var):
                    yield chunk.text
            if done:
                if self.error_ is not None:
                    raise self.error_
                return

    def _done(self) -> bool:
        return self.error_ is not None or self.stopped

    # --- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            expr = self.queue.get()
            try:
                if expr is None:
                    return
                if self.error_ is None:
                    for item in expr.flatten():
                        self._execute(item)
                else:  # skipped after an error: whoever waits on its variables must wake
                    for name in named_outputs(expr):
                        self.events[name].set()
            except BaseException as exc:  # reported through error(); the program decides
                self.fail(exc)
            finally:
                if expr is None:
                    with self.changed:
                        self.stopped = True
                        self.changed.notify_all()
                self.queue.task_done()

    def _execute(self, expr: Expr) -> None:
        if isinstance(expr, Text):
            self.append_text(expr.text)
        elif isinstance(expr, Gen):
            self._gen(expr)
        elif isinstance(expr, Select):
            self._select(expr)
        elif isinstance(expr, RoleBegin):
            self._role_begin(expr.role)
        elif isinstance(expr, RoleEnd):
            self._role_end(expr.role)
        elif isinstance(expr, VarScopeBegin):
            self.scope_starts[expr.name] = len(self.text_)
        elif isinstance(expr, VarScopeEnd):
            self._scope_end(expr.name)
        elif isinstance(expr, SetVar):
            self._set_var(expr.name, expr.value, None)
        else:
            raise ProgramError(f"cannot execute {type(expr).__name__}")

    def append_text(self, text: str, var: str | None = None) -> None:
        with self.changed:
            self.text_ += text
            self.chunks.append(Chunk(text, var))
            self.changed.notify_all()

    def _set_var(self, name: str | None, value: Any, meta: dict[str, Any] | None) -> None:
        """`meta` None: the value came from no server call (a var scope, `s[name] = ...`)."""
        if name is None:
            return
        self.variables[name] = value
        if meta is None:
            self.meta_info.pop(name, None)
        else:
            self.meta_info[name] = meta
        self.events.setdefault(name, threading.Event()).set()

    def _scope_end(self, name: str) -> None:
        start = self.scope_starts.pop(name, None)
        if start is None:
            raise ProgramError(f"var scope {name!r} ends but was never opened")
        self._set_var(name, self.text_[start:], None)

    def _gen(self, expr: Gen) -> None:
        sampling = self.defaults | expr.sampling
        if expr.extra_stop:
            stop = sampling.get("stop") or []
            sampling["stop"] = ([stop] if isinstance(stop, str) else list(stop)) + list(
                expr.extra_stop
            )
        if self.stream and not expr.return_logprob:
            parts: list[str] = []
            meta: dict[str, Any] = {}
            for delta in self.backend.generate_stream(self.text_, sampling):
                if delta.text:
                    parts.append(delta.text)
                    self.append_text(delta.text, expr.name)
                if delta.meta_info is not None:
                    meta = delta.meta_info
            self._set_var(expr.name, "".join(parts), meta)
            return
        out = self.backend.generate(
            self.text_, sampling, expr.return_logprob, expr.top_logprobs_num
        )
        self.append_text(out.text, expr.name)
        self._set_var(expr.name, out.text, out.meta_info)

    def _select(self, expr: Select) -> None:
        method = expr.choices_method
        scores = self.backend.score_choices(
            self.text_, expr.choices, unconditional=method.needs_unconditional
        )
        conditional, unconditional = scores.token_logprobs, scores.unconditional_logprobs
        index = method.pick(conditional, unconditional)
        choice = expr.choices[index]
        self.append_text(choice, expr.name)
        meta = decision_meta(
            method, index, conditional, unconditional, scores.prompt_meta, scores.choice_metas
        )
        self._set_var(expr.name, choice, meta)

    def _role_begin(self, role: str) -> None:
        if self.role is not None:
            raise ProgramError(f"a {role!r} block cannot start inside the open {self.role!r} block")
        template = self.template()
        if not self.messages_ and role != "system" and template.default_system:
            self.append_text(template.default_system)
        self.append_text(template.begin(role))
        self.role, self.role_start = role, len(self.text_)

    def _role_end(self, role: str) -> None:
        if self.role != role:
            raise ProgramError(f"{role!r} block ends but the open block is {self.role!r}")
        self.messages_.append({"role": role, "content": self.text_[self.role_start :]})
        self.role = None
        self.append_text(self.template().end(role))

    def template(self) -> ChatTemplate:
        if self._template is None:
            self._template = self.backend.chat_template()
        return self._template
