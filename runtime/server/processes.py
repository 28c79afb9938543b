"""What the server side needs of the processes behind it; the launcher (in entrypoints/) is one.

The server never starts the scheduler or detokenizer itself, so it never imports their code: it
gets their sockets' addresses, the options they run with, what they reported at start-up, and a
way to ask whether one has died.
"""

from __future__ import annotations

from typing import Protocol

from ..config.server_args import ServerArgs
from ..wire.ipc import IpcPaths
from ..wire.messages import RuntimeInfo


class RuntimeProcesses(Protocol):
    args: ServerArgs
    paths: IpcPaths

    @property
    def info(self) -> RuntimeInfo:
        """What the schedulers reported at start-up."""
        ...

    def dead_child(self) -> str | None:
        """'<name> process died (exit code N)' for a child that has died, else None."""
        ...
