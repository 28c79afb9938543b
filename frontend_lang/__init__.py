"""The frontend language: programs of gen / select / fork / roles run against a server.

Names follow SGLang's frontend language, so its programs port with `import radixserve as rs`.
"""

from __future__ import annotations

from radixserve.frontend_lang.backend.base import (
    BackendError,
    BaseBackend,
    get_default_backend,
    set_default_backend,
)
from radixserve.frontend_lang.backend.endpoint import RuntimeEndpoint
from radixserve.frontend_lang.backend.runtime import Runtime
from radixserve.frontend_lang.chat_template import ChatTemplate
from radixserve.frontend_lang.executor import ProgramError
from radixserve.frontend_lang.function import SglFunction, function
from radixserve.frontend_lang.ir import (
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
from radixserve.frontend_lang.state import ProgramState, ProgramStateGroup

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
