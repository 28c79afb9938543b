"""The request sets of the online benchmark (bench_serving): prompts as text, with their lengths.

An online benchmark talks to a server in its API's terms, so every prompt is text (and its
token ids, for `--tokenize-prompt`). The single-turn sets reuse the offline benchmark's draws
(benchmarks/throughput_datasets.py: SGLang's lengths, same seed, same totals) and decode their
ids; ShareGPT keeps the conversation's own text unless the tokenizer could not map it (a dummy
model's word-level tokenizer), in which case the ids, with unknown tokens replaced by random
ids, are decoded into words that round-trip.

`multi-turn` makes chats that grow turn by turn: each conversation takes the human turns of one
ShareGPT conversation (or random words without ShareGPT); turn t's prompt is the previous
prompt, the model's actual answer to it, and the next user message, so each turn can only be
sent once the previous one has finished, and its prompt starts with everything the server saw
for that conversation before (what a radix cache reuses).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.throughput_datasets import (
    DatasetFlags,
    DatasetRow,
    read_conversations,
    replace_unknown,
    sample_generated_shared_prefix,
    sample_random,
    sample_sharegpt,
    sharegpt_file,
)

# How a turn is written into a plain-text prompt (completions and /generate backends; the chat
# backends send messages and let the server's chat template render them).
USER_PREFIX, ASSISTANT_PREFIX = "\n\nUser: ", "\n\nAssistant:"


@dataclass(slots=True)
class ServingRequest:
    """One request to send. A multi-turn request (`turn > 0`) has its prompt completed at send
    time from the previous turn's prompt and answer (`conversation`, `user_message`)."""

    prompt: str
    prompt_ids: list[int]
    prompt_len: int
    output_len: int
    conversation: int = -1  # -1: a single-turn request
    turn: int = 0
    user_message: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)  # for the chat backends


@dataclass(slots=True)
class DatasetOptions(DatasetFlags):
    """SGLang's dataset flags (the names bench_serving's CLI uses), those this module reads."""

    multi_turn_num_turns: int = 4
    multi_turn_output_len: int = 64


def sample_serving_requests(
    opts: DatasetOptions, tokenizer, vocab_size: int, context_len: int | None
) -> list[ServingRequest]:
    rng = np.random.RandomState(opts.seed)
    shuffle = random.Random(opts.seed)
    name = opts.dataset_name
    if name == "multi-turn":
        return sample_multi_turn(opts, tokenizer, vocab_size, rng, shuffle)
    if name == "random":
        rows = sample_random(
            opts.num_prompts,
            opts.random_input_len,
            opts.random_output_len,
            opts.random_range_ratio,
            vocab_size,
            rng,
        )
    elif name == "generated-shared-prefix":
        rows = sample_generated_shared_prefix(
            opts.gsp_num_groups,
            opts.gsp_prompts_per_group,
            opts.gsp_system_prompt_len,
            opts.gsp_question_len,
            opts.gsp_output_len,
            opts.gsp_range_ratio,
            vocab_size,
            rng,
            shuffle,
        )
    elif name == "sharegpt":
        rows = sample_sharegpt(
            sharegpt_file(opts.dataset_path),
            opts.num_prompts,
            tokenizer,
            vocab_size,
            opts.sharegpt_output_len,
            opts.sharegpt_context_len or context_len,
            shuffle,
            rng,
        )
    else:
        raise ValueError(f"unknown dataset {name!r}")
    return [as_text_request(row, tokenizer) for row in rows]


def as_text_request(row: DatasetRow, tokenizer) -> ServingRequest:
    """The row's ids decoded; the length counted again from the text (what the server sees,
    when it tokenizes the same way)."""
    text = tokenizer.decode(row.prompt_ids)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ServingRequest(text, ids, len(ids), row.output_len)


def mappable_text(text: str, tokenizer, vocab_size: int, rng: np.random.RandomState) -> str:
    """`text`, or, where the tokenizer maps some of it to its unknown token, the decoded ids
    with those replaced by random ids (words a dummy model's tokenizer round-trips)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    fixed = replace_unknown(ids, tokenizer.unk_token_id, vocab_size, rng)
    return text if fixed == ids else tokenizer.decode(fixed)


def user_messages(
    opts: DatasetOptions, tokenizer, vocab_size: int, rng: np.random.RandomState, shuffle
) -> list[list[str]]:
    """`turns` user messages per conversation: ShareGPT's human turns (conversations with at
    least that many), or random words when neither the package nor --dataset-path has them."""
    turns = opts.multi_turn_num_turns
    num_conversations = -(-opts.num_prompts // turns)
    try:
        path: Path | None = sharegpt_file(opts.dataset_path)
    except SystemExit:
        path = None
    chats: list[list[str]] = []
    if path is not None and path.exists():
        for conversation in read_conversations(path):
            human = [c["value"] for c in conversation if c.get("from") == "human"]
            if len(human) >= turns and all(h.strip() for h in human[:turns]):
                chats.append(human[:turns])
        shuffle.shuffle(chats)
    if len(chats) < num_conversations:  # no ShareGPT here: random words of 16..64 tokens
        chats = [
            [
                tokenizer.decode(list(rng.randint(0, vocab_size, rng.randint(16, 65))))
                for _ in range(turns)
            ]
            for _ in range(num_conversations)
        ]
    return [
        [mappable_text(m, tokenizer, vocab_size, rng) for m in chat]
        for chat in chats[:num_conversations]
    ]


def sample_multi_turn(
    opts: DatasetOptions, tokenizer, vocab_size: int, rng: np.random.RandomState, shuffle
) -> list[ServingRequest]:
    """Conversations' turns, interleaved in order (turn 0 of every conversation, then turn 1...),
    `num_prompts` in all. Only turn 0's prompt is known now; later turns are completed at send
    time (`turn_prompt`)."""
    chats = user_messages(opts, tokenizer, vocab_size, rng, shuffle)
    requests = []
    for turn in range(opts.multi_turn_num_turns):
        for conv, chat in enumerate(chats):
            if len(requests) == opts.num_prompts:
                break
            message = chat[turn]
            prompt = USER_PREFIX.lstrip() + message + ASSISTANT_PREFIX if turn == 0 else ""
            ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
            requests.append(
                ServingRequest(
                    prompt,
                    ids,
                    len(ids),
                    opts.multi_turn_output_len,
                    conversation=conv,
                    turn=turn,
                    user_message=message,
                    messages=[{"role": "user", "content": message}],
                )
            )
    return requests


def next_turn(previous: ServingRequest, answer: str, request: ServingRequest, tokenizer) -> None:
    """Completes `request` (the next turn) from the previous turn's prompt and its answer."""
    request.prompt = (
        previous.prompt + answer + USER_PREFIX + request.user_message + ASSISTANT_PREFIX
    )
    request.messages = [
        *previous.messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": request.user_message},
    ]
    request.prompt_ids = tokenizer.encode(request.prompt, add_special_tokens=False)
    request.prompt_len = len(request.prompt_ids)
