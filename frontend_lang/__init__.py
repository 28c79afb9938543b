"""The frontend language: programs of gen / select / fork / roles run against a server.

Names follow SGLang's frontend language, so its programs port with `import radixserve as sgl`;
the `REGEX_*` constants of `sglang.lang.ir` are in `radixserve.frontend_lang.ir` (and here).
"""

from __future__ import annotations

from .backend.base import (
    BackendError,
    BaseBackend,
    flush_cache,
    get_default_backend,
    get_server_info,
    set_default_backend,
)
from .backend.endpoint import RuntimeEndpoint
from .backend.runtime import Runtime, connect
from .chat_template import ChatTemplate
from .choices import (
    ChoicesMethod,
    greedy_token_selection,
    joint_likelihood,
    token_length_normalized,
    unconditional_likelihood_normalized,
)
from .executor import ProgramError
from .function import SglFunction, function
from .ir import (
    REGEX_BOOL,
    REGEX_FLOAT,
    REGEX_INT,
    REGEX_STR,
    assistant,
    assistant_begin,
    assistant_end,
    gen,
    gen_int,
    gen_string,
    select,
    system,
    system_begin,
    system_end,
    user,
    user_begin,
    user_end,
)
from .state import ProgramState, ProgramStateGroup

__all__ = [
    "REGEX_BOOL",
    "REGEX_FLOAT",
    "REGEX_INT",
    "REGEX_STR",
    "BackendError",
    "BaseBackend",
    "ChatTemplate",
    "ChoicesMethod",
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
    "flush_cache",
    "function",
    "gen",
    "gen_int",
    "gen_string",
    "get_default_backend",
    "get_server_info",
    "greedy_token_selection",
    "joint_likelihood",
    "select",
    "set_default_backend",
    "system",
    "system_begin",
    "system_end",
    "token_length_normalized",
    "unconditional_likelihood_normalized",
    "user",
    "user_begin",
    "user_end",
]
