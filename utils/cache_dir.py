"""Where radixserve keeps what it builds once per machine (converted tokenizers, compiled CPU
kernels): $RADIXSERVE_CACHE_DIR, else ~/.cache/radixserve."""

from __future__ import annotations

import os

CACHE_DIR_ENV = "RADIXSERVE_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "radixserve")


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)
