"""Where radixserve keeps what it builds once per machine (converted tokenizers, GGUF configs,
compiled CPU kernels): $RADIXSERVE_CACHE_DIR, else ~/.cache/radixserve."""

from __future__ import annotations

import hashlib
import os

CACHE_DIR_ENV = "RADIXSERVE_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "radixserve")


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)


def file_key(path: str, *salt: str) -> str:
    """A short name for what is derived from the file at `path` (and `salt`, e.g. the version of
    the library that derived it): a new one whenever the file is replaced or rewritten."""
    stat = os.stat(path)
    key = ":".join([os.path.abspath(path), str(stat.st_size), str(stat.st_mtime_ns), *salt])
    return hashlib.sha256(key.encode()).hexdigest()[:16]
