"""The few-shot example over 20 questions: the shared prefix is computed once."""

from __future__ import annotations

import pytest

import radixserve as rs
from examples.few_shot_eval import evaluate

pytestmark = pytest.mark.slow


def test_few_shot_calls_after_the_first_hit_the_cache(backend: rs.RuntimeEndpoint) -> None:
    backend.flush_cache()
    report = evaluate(backend, "largest_country", shots=5, questions=20, progress_bar=False)
    assert len(report.answers) == 20 and all(isinstance(a, str) for a in report.answers)
    assert report.prefix_tokens > 150
    assert report.coverage[0] < 0.5  # the first call computed the prefix
    assert min(report.coverage[1:]) >= 0.9, report.coverage
