"""The n-gram speculation flags: parsed into ServerArgs, checked before the model loads."""

from __future__ import annotations

import pytest

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.entrypoints.components import num_draft_tokens
from radixserve.runtime.entrypoints.launch_server import parse_args


def test_flags_parse_to_server_args() -> None:
    args = parse_args(
        ["--speculative-algorithm", "ngram", "--speculative-num-draft-tokens", "3",
         "--speculative-ngram-min", "1", "--speculative-ngram-max", "4"]
    )  # fmt: skip
    assert args == ServerArgs(
        speculative_algorithm="ngram",
        speculative_num_draft_tokens=3,
        speculative_ngram_min=1,
        speculative_ngram_max=4,
    )
    assert num_draft_tokens(args) == 3
    assert ServerArgs().speculative_ngram_min == 2  # vLLM's prompt_lookup_min, our default
    assert num_draft_tokens(ServerArgs()) == 0  # off unless asked for


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"speculative_ngram_min": 0}, "--speculative-ngram-min must be >= 1"),
        ({"speculative_num_draft_tokens": 0}, "--speculative-num-draft-tokens"),
        (
            {"speculative_ngram_min": 3, "speculative_ngram_max": 2},
            "must be >= --speculative-ngram-min",
        ),
        ({"speculative_algorithm": "eagle"}, "unknown speculative algorithm 'eagle'"),
    ],
)
def test_bad_values_are_refused(fields: dict, message: str) -> None:
    args = ServerArgs(**{"speculative_algorithm": "ngram", **fields})
    with pytest.raises(ValueError, match=message):
        num_draft_tokens(args)
