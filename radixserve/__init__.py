"""radixserve: a prefix-sharing serving runtime for agentic LLM programs.

Heavy parts (torch, transformers) load on first use, so `import radixserve` stays cheap for
programs that only talk to a server.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenBLAS (numpy's BLAS, which runs the CPU's matrix products: kernels/cpu/blas_linear.py) keeps
# its worker threads spinning for 2^28 cycles after each call by default, so between a decode
# step's products they burn the second core while the main thread runs the small ops: measured on
# the 2-core machine, a batch-1 run of 32 tokens took 3.1-3.3 s of CPU for 1.56-1.66 s of wall;
# with the workers sleeping at once, 2.08 s for 1.48 s. OpenBLAS reads this when numpy loads, so it
# is set before anything here imports numpy (a process that loaded numpy first keeps its own; a
# value already in the environment wins).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .utils.registry import import_target

_LAZY = {
    "Engine": "radixserve.runtime.entrypoints.engine:Engine",
    "ServerArgs": "radixserve.runtime.config.server_args:ServerArgs",
    "SamplingParams": "radixserve.runtime.wire.sampling_params:SamplingParams",
    # The frontend language (no torch import).
    "BackendError": "radixserve.frontend_lang:BackendError",
    "ProgramState": "radixserve.frontend_lang:ProgramState",
    "REGEX_BOOL": "radixserve.frontend_lang:REGEX_BOOL",
    "REGEX_FLOAT": "radixserve.frontend_lang:REGEX_FLOAT",
    "REGEX_INT": "radixserve.frontend_lang:REGEX_INT",
    "REGEX_STR": "radixserve.frontend_lang:REGEX_STR",
    "Runtime": "radixserve.frontend_lang:Runtime",
    "RuntimeEndpoint": "radixserve.frontend_lang:RuntimeEndpoint",
    "assistant": "radixserve.frontend_lang:assistant",
    "assistant_begin": "radixserve.frontend_lang:assistant_begin",
    "assistant_end": "radixserve.frontend_lang:assistant_end",
    "connect": "radixserve.frontend_lang:connect",
    "flush_cache": "radixserve.frontend_lang:flush_cache",
    "function": "radixserve.frontend_lang:function",
    "gen": "radixserve.frontend_lang:gen",
    "gen_int": "radixserve.frontend_lang:gen_int",
    "gen_string": "radixserve.frontend_lang:gen_string",
    "get_default_backend": "radixserve.frontend_lang:get_default_backend",
    "get_server_info": "radixserve.frontend_lang:get_server_info",
    "greedy_token_selection": "radixserve.frontend_lang:greedy_token_selection",
    "joint_likelihood": "radixserve.frontend_lang:joint_likelihood",
    "select": "radixserve.frontend_lang:select",
    "set_default_backend": "radixserve.frontend_lang:set_default_backend",
    "system": "radixserve.frontend_lang:system",
    "system_begin": "radixserve.frontend_lang:system_begin",
    "system_end": "radixserve.frontend_lang:system_end",
    "token_length_normalized": "radixserve.frontend_lang:token_length_normalized",
    "unconditional_likelihood_normalized": (
        "radixserve.frontend_lang:unconditional_likelihood_normalized"
    ),
    "user": "radixserve.frontend_lang:user",
    "user_begin": "radixserve.frontend_lang:user_begin",
    "user_end": "radixserve.frontend_lang:user_end",
}

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from .frontend_lang import (
        REGEX_BOOL,
        REGEX_FLOAT,
        REGEX_INT,
        REGEX_STR,
        BackendError,
        ProgramState,
        Runtime,
        RuntimeEndpoint,
        assistant,
        assistant_begin,
        assistant_end,
        connect,
        flush_cache,
        function,
        gen,
        gen_int,
        gen_string,
        get_default_backend,
        get_server_info,
        greedy_token_selection,
        joint_likelihood,
        select,
        set_default_backend,
        system,
        system_begin,
        system_end,
        token_length_normalized,
        unconditional_likelihood_normalized,
        user,
        user_begin,
        user_end,
    )
    from .runtime.config.server_args import (
        ServerArgs,
    )
    from .runtime.entrypoints.engine import (
        Engine,
    )
    from .runtime.wire.sampling_params import (
        SamplingParams,
    )

__all__ = [
    "BackendError",
    "Engine",
    "ProgramState",
    "REGEX_BOOL",
    "REGEX_FLOAT",
    "REGEX_INT",
    "REGEX_STR",
    "Runtime",
    "RuntimeEndpoint",
    "SamplingParams",
    "ServerArgs",
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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'radixserve' has no attribute {name!r}")
    return import_target(_LAZY[name])
