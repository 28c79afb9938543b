"""`ProgramState`, the `s` of a program, and the group of states that `s.fork(n)` returns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, overload

from .executor import Snapshot, StreamExecutor
from .ir import (
    Expr,
    RoleBegin,
    RoleEnd,
    SetVar,
    VarScopeBegin,
    VarScopeEnd,
    role_block,
    to_expr,
)

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

    @contextlib.contextmanager
    def var_scope(self, name: str) -> Iterator[None]:
        """`with s.var_scope("out"): ...`: the text appended inside becomes variable `out`."""
        self.executor.submit(VarScopeBegin(name))
        yield
        self.executor.submit(VarScopeEnd(name))

    def __setitem__(self, name: str, value: Any) -> None:
        """`s[name] = value` sets a variable, after whatever the program appended before."""
        self.executor.submit(SetVar(name, value))

    def set_var(self, name: str, value: Any) -> None:
        self[name] = value

    def fork(self, size: int = 1) -> ProgramStateGroup:
        """`size` states that continue from this one. With more than one, the text so far is
        computed into the server's cache first, so the branches find it there instead of each
        computing it; one branch has nothing to share and sends no such request (as SGLang)."""
        size = int(size)
        if size < 1:
            raise ValueError(f"fork size must be >= 1, got {size}")
        parent = self.executor
        snapshot = parent.snapshot()
        prefix_meta = (
            parent.backend.cache_prefix(snapshot.text) if size > 1 and snapshot.text else {}
        )
        children = [
            StreamExecutor(parent.backend, parent.defaults, stream=False, snapshot=snapshot)
            for _ in range(size)
        ]
        parent.children.extend(children)
        return ProgramStateGroup([ProgramState(c) for c in children], self, snapshot, prefix_meta)

    @contextlib.contextmanager
    def copy(self) -> Iterator[ProgramState]:
        """`with s.copy() as c:` a one-branch fork, joined (gather_variable) when the block ends."""
        group = self.fork(1)
        try:
            yield group[0]
        finally:
            group.join()

    # --- reading -------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        return self.executor.get_var(name)

    def get_var(self, name: str) -> Any:
        return self.executor.get_var(name)

    def __contains__(self, name: str) -> bool:
        self.sync()
        return name in self.executor.variables

    def get_meta_info(self, name: str) -> Any:
        """The server's meta_info of the call that produced `name`: a dict, a list of them for a
        name gathered by a join, None for a value that no call produced (a var scope)."""
        self.executor.wait_for(name)
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

    def __setitem__(self, index: int, value: ProgramState) -> None:
        """Python ends `forks[i] += expr` with `forks[i] = forks[i]`; the branch stays itself."""
        if value is not self.states[index]:
            raise TypeError(
                "a fork's branches cannot be replaced; append to one with forks[i] += expr"
            )

    def __iadd__(self, other: object) -> ProgramStateGroup:
        """Appends to every branch: one expression to all, a list or tuple with one expression
        per branch, or a function of the branch index (`forks += lambda i: ...`). Every
        expression is checked before any branch gets one."""
        count = len(self.states)
        if callable(other) and not isinstance(other, Expr):
            per_branch = [other(i) for i in range(count)]
        elif isinstance(other, (list, tuple)):
            if len(other) != count:
                raise ValueError(f"got {len(other)} expressions for {count} branches")
            per_branch = list(other)
        else:
            per_branch = [other] * count
        exprs = [to_expr(item) for item in per_branch]
        for state, expr in zip(self.states, exprs, strict=True):
            state.executor.submit(expr)
        return self

    def join(self, mode: str = "gather_variable") -> None:
        """Waits for every branch, then merges into the parent state (SGLang's two modes).

        gather_variable: every variable a branch has that the parent lacks at join time
        becomes a list on the parent, one value per branch that has it, in branch order (a name
        the parent already has keeps the parent's value). concate_and_append: the branches'
        new text is appended to the parent's, in branch order.
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
            values: dict[str, list[Any]] = {}
            metas: dict[str, list[Any]] = {}
            for branch in branches:
                for name in branch.variables.keys() - parent.variables.keys():
                    values.setdefault(name, []).append(branch.variables[name])
                    metas.setdefault(name, []).append(branch.meta_info.get(name))
            for name, gathered in values.items():
                parent.variables[name] = gathered
                parent.meta_info[name] = metas[name]
                if name in parent.events:
                    parent.events[name].set()
        else:
            start = len(self.base.text)
            parent.append_text("".join(b.text_[start:] for b in branches))
