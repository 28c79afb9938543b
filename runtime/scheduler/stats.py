"""Scheduler telemetry: per-step figures and running counters (the metrics endpoint reads these)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class StepStats:
    batch_size: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    cache_hit_tokens: int = 0
    queue_depth: int = 0
    running: int = 0
    kv_usage: float = 0.0  # fraction of pages not free
    schedule_seconds: float = 0.0  # CPU time spent deciding the batch (not the forward pass)
    forward_seconds: float = 0.0


@dataclass(slots=True)
class SchedulerCounters:
    steps: int = 0
    requests_finished: int = 0
    requests_aborted: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    cache_hit_tokens: int = 0
    prompt_tokens: int = 0
    retractions: int = 0
    jump_forward_tokens: int = 0  # grammar-forced tokens appended without a decode step each
    spec_draft_tokens: int = 0  # n-gram drafts proposed to the model
    spec_accepted_tokens: int = 0  # ... of which the model agreed with (one step saved each)

    def add(self, step: StepStats) -> None:
        self.steps += 1
        self.prefill_tokens += step.prefill_tokens
        self.decode_tokens += step.decode_tokens

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
