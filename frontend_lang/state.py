"""`ProgramState`, the `s` of a program, and the group of states that `s.fork(n)` returns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, overload

from .executor import Snapshot, StreamExecutor
from .ir import RoleBegin, RoleEnd, role_block, to_expr

JOIN_MODES = ("gather_variable", "concate_and_append")


class ProgramState:
    def __init__(self, executor: StreamExecutor) -> None:
        self.executor = executor
        self.ret_value: Any = None  # what the program function returned

    # --- building --------------------------------------------------------------------------------

    def __iadd__(self, other: object) -> ProgramState:
        self.executor.submit(to_expr(other))
        return self

    def system(self, expr: object | None = None) -> Any:
        return self._role("system", expr)

    def user(self, expr: object | None = None) -> Any:
        return self._role("user", expr)

    def assistant(self, expr: object | None = None) -> Any:
        return self._role("assistant", expr)

    def _role(self, role: str, expr: object | None) -> Any:
        """With an expression, appends the whole block; without, returns a `with` scope."""
        if expr is not None:
            self += role_block(role, expr)
            return None

        @contextlib.contextmanager
        def scope() -> Iterator[None]:
            self.executor.submit(RoleBegin(role))
            yield
            self.executor.submit(RoleEnd(role))

        return scope()

    def fork(self, size: int = 1) -> ProgramStateGroup:
        """`size` states that continue from this one; its text is computed once, before them."""
        if size < 1:
            raise ValueError(f"fork size must be >= 1, got {size}")
        parent = self.executor
        snapshot = parent.snapshot()
        prefix_meta = parent.backend.cache_prefix(snapshot.text) if snapshot.text else {}
        children = [
            StreamExecutor(parent.backend, parent.defaults, stream=False, snapshot=snapshot)
            for _ in range(size)
        ]
        parent.children.extend(children)
        return ProgramStateGroup([ProgramState(c) for c in children], self, snapshot, prefix_meta)

    # --- reading -------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        return self.executor.get_var(name)

    def get_var(self, name: str) -> Any:
        return self.executor.get_var(name)

    def __contains__(self, name: str) -> bool:
        self.sync()
        return name in self.executor.variables

    def get_meta_info(self, name: str) -> dict[str, Any] | list[dict[str, Any]] | None:
        """The server's meta_info of the call that produced `name` (a list after a join)."""
        self.executor.get_var(name)
        return self.executor.meta_info.get(name)

    def variables(self) -> dict[str, Any]:
        self.sync()
        return dict(self.executor.variables)

    def text(self) -> str:
        self.sync()
        return self.executor.text_

    def messages(self) -> list[dict[str, str]]:
        self.sync()
        return [dict(m) for m in self.executor.messages_]

    def error(self) -> BaseException | None:
        self.sync()
        return self.executor.error_

    def sync(self) -> None:
        self.executor.sync()

    def text_iter(self, var_name: str | None = None) -> Iterator[str]:
        """Yields text as it is appended (with `run(stream=True)`, as it is generated); raises the
        program's error, if any, at the end."""
        return self.executor.iter_chunks(var_name)

    def __repr__(self) -> str:
        return f"ProgramState({self.text()!r})"


class ProgramStateGroup(Sequence[ProgramState]):
    def __init__(
        self,
        states: list[ProgramState],
        parent: ProgramState,
        base: Snapshot,
        prefix_meta: dict[str, Any],
    ) -> None:
        self.states = states
        self.parent = parent
        self.base = base
        self.prefix_meta = prefix_meta  # the server's meta_info for the shared prefix
        self.joined = False

    @overload
    def __getitem__(self, index: int) -> ProgramState: ...
    @overload
    def __getitem__(self, index: slice) -> list[ProgramState]: ...
    def __getitem__(self, index: int | slice) -> ProgramState | list[ProgramState]:
        return self.states[index]

    def __len__(self) -> int:
        return len(self.states)

    def __iadd__(self, other: object) -> ProgramStateGroup:
        """Appends to every branch; a list or tuple gives each branch its own expression."""
        if isinstance(other, (list, tuple)):
            if len(other) != len(self.states):
                raise ValueError(f"got {len(other)} expressions for {len(self.states)} branches")
            for state, item in zip(self.states, other, strict=True):
                state += item
        else:
            for state in self.states:
                state += other
        return self

    def join(self, mode: str = "gather_variable") -> None:
        """Waits for every branch, then merges into the parent state.

        gather_variable: each variable the branches set becomes a list (one value per branch)
        in the parent. concate_and_append: the branches' new text is appended to the parent.
        """
        if mode not in JOIN_MODES:
            raise ValueError(f"unknown join mode {mode!r}; choose one of {JOIN_MODES}")
        if self.joined:
            return
        self.joined = True
        for state in self.states:
            state.executor.end()
        for state in self.states:
            state.sync()
            if state.executor.error_ is not None:
                raise state.executor.error_
        parent = self.parent.executor
        parent.sync()  # the parent's own queue runs first, as the program wrote it
        branches = [s.executor for s in self.states]
        if mode == "gather_variable":
            names = [n for b in branches for n in b.variables if self._is_new(b, n)]
            for name in dict.fromkeys(names):
                parent.variables[name] = [b.variables.get(name) for b in branches]
                parent.meta_info[name] = [b.meta_info.get(name) for b in branches]
                if name in parent.events:
                    parent.events[name].set()
        else:
            start = len(self.base.text)
            parent.append_text("".join(b.text_[start:] for b in branches))

    def _is_new(self, branch: StreamExecutor, name: str) -> bool:
        old = self.base.variables
        return name not in old or branch.variables[name] is not old[name]
