"""The frontend language: programs of gen / select / fork / roles run against a server.

Names follow SGLang's frontend language, so its programs port with `import radixserve as rs`.
"""

from __future__ import annotations

from .backend.base import (
    BackendError,
    BaseBackend,
    get_default_backend,
    set_default_backend,
)
from .backend.endpoint import RuntimeEndpoint
from .backend.runtime import Runtime, connect
from .chat_template import ChatTemplate
from .executor import ProgramError
from .function import SglFunction, function
from .ir import (
    assistant,
    assistant_begin,
    assistant_end,
    gen,
    greedy_token_selection,
    joint_likelihood,
    select,
    system,
    system_begin,
    system_end,
    token_length_normalized,
    user,
    user_begin,
    user_end,
)
from .state import ProgramState, ProgramStateGroup

__all__ = [
    "BackendError",
    "BaseBackend",
    "ChatTemplate",
    "ProgramError",
    "ProgramState",
    "ProgramStateGroup",
    "Runtime",
    "RuntimeEndpoint",
    "SglFunction",
    "assistant",
    "assistant_begin",
    "assistant_end",
    "connect",
    "function",
    "gen",
    "get_default_backend",
    "greedy_token_selection",
    "joint_likelihood",
    "select",
    "set_default_backend",
    "system",
    "system_begin",
    "system_end",
    "token_length_normalized",
    "user",
    "user_begin",
    "user_end",
]
