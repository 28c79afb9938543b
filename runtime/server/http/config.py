"""Limits and timings of the HTTP layer (the runtime's own options live in `ServerArgs`)."""

from __future__ import annotations

from dataclasses import dataclass

# OpenAI's documented ceiling for chat `top_logprobs`; we apply it to completions `logprobs` too.
OPENAI_MAX_TOP_LOGPROBS = 20


@dataclass(slots=True, frozen=True)
class HttpConfig:
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies get 413
    completions_default_max_tokens: int = 16  # OpenAI's default for /v1/completions
    stats_timeout_s: float = 5.0  # a scrape serves the last figures if the scheduler is slow
    health_generate_timeout_s: float = 60.0
    graceful_shutdown_s: float = 5.0  # open streams get this long after SIGTERM
    death_grace_s: float = 1.0  # after a child dies, /health answers 503 this long before exit
    # Prompt logprobs kept for echo + logprobs requests (one value per token plus its top-k
    # alternatives; about 100 bytes each): see prompt_logprobs.py.
    prompt_logprob_cache_values: int = 1 << 18
    # /debug/radix_tree: nodes per page by default and at most, token ids shown per node at
    # most (the walk runs in the scheduler's loop, between two steps, so pages stay bounded).
    debug_tree_default_nodes: int = 500
    debug_tree_max_nodes: int = 5000
    debug_tree_max_preview: int = 64
