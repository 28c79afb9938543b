"""The scheduler's own settings (a subset of `ServerArgs`, resolved against the model)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SchedulerConfig:
    page_size: int
    context_len: int
    chunked_prefill_size: int = 2048
    max_prefill_tokens: int = 8192
    max_running_requests: int = 256
    schedule_policy: str = "lpm"
    log_interval: int = 0  # steps between log lines; 0 = never
    num_draft_tokens: int = 0  # n-gram speculative decoding: drafts per step; 0 = off
    ngram_max: int = 3  # longest suffix n-gram looked up for drafts
    ngram_min: int = 2  # shortest (ServerArgs.speculative_ngram_min says why 2)
