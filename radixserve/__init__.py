"""radixserve: a prefix-sharing serving runtime for agentic LLM programs.

Heavy parts (torch, transformers) load on first use, so `import radixserve` stays cheap for
programs that only talk to a server.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Engine": "radixserve.runtime.engine:Engine",
    "ServerArgs": "radixserve.runtime.server_args:ServerArgs",
    "SamplingParams": "radixserve.runtime.sampling:SamplingParams",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'radixserve' has no attribute {name!r}")
    module_name, attr = _LAZY[name].split(":")
    return getattr(importlib.import_module(module_name), attr)
