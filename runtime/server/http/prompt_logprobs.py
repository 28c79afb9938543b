"""Prompt-token logprobs already computed, looked up by token prefix (echo + logprobs requests).

Why: a prompt token's logprob needs the logits of the row before it, which the KV cache does not
keep, so a request that asks for every prompt logprob (`echo` + `logprobs`: how
lm-evaluation-harness scores few-shot prompts) would recompute its whole prompt and reuse none of
the radix cache. A prompt logprob depends only on the tokens up to it, so once computed it holds
for every later prompt with that prefix. The completions handler asks the scheduler only for the
logprobs after the longest known prefix (`logprob_start_len`), and the scheduler may then reuse the
KV of every token before it.

Entries are kept in blocks along the prompt; block 0 also holds token 0 (which nothing predicts):

    tokens   t0 | t1 ... tB | tB+1 ... t2B | ...
    block    [---- 0 -----] [---- 1 -----]
    known    1 + m*B tokens after m blocks

so the known length less one is a whole number of blocks: with B a multiple of the KV page size,
the scheduler (which must recompute the row before `logprob_start_len`) reuses whole pages.
A block is keyed by its parent's id and its own tokens, so a block is found only behind the exact
prefix it was computed after. Least recently used blocks go first when the cache is full; a block
behind an evicted one is unreachable and ages out in turn.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

from .openai_logprobs import TokenLogprob

BlockKey = tuple[int, tuple[int, ...]]  # (parent block id, the block's tokens)
ROOT_ID = 0
MIN_BLOCK_TOKENS = 16  # smaller KV pages still get blocks this long (fewer, larger entries)


@dataclass(slots=True)
class _Block:
    id: int
    entries: list[TokenLogprob]  # one per token the block covers (block 0: not token 0)
    top_k: int  # how many top logprobs each entry holds
    cost: int  # logprob values held: what the capacity counts


class PromptLogprobCache:
    def __init__(self, capacity_values: int, page_size: int) -> None:
        """`capacity_values`: logprob values kept (one per token plus its top-k alternatives)."""
        self.capacity_values = capacity_values
        self.block_tokens = page_size * -(-MIN_BLOCK_TOKENS // page_size)
        self._blocks: OrderedDict[BlockKey, _Block] = OrderedDict()
        self._ids = itertools.count(ROOT_ID + 1)
        self.size_values = 0

    def lookup(self, ids: list[int], top_k: int) -> list[TokenLogprob]:
        """Entries of the prompt's longest known prefix (its first token's needs no block), with
        at most `top_k` alternatives each; empty for an empty prompt."""
        if not ids:
            return []
        found = [TokenLogprob(ids[0], None, None)]
        parent = ROOT_ID
        for _, tokens in self._keys(ids):
            block = self._blocks.get((parent, tokens))
            if block is None or block.top_k < top_k:
                break
            self._blocks.move_to_end((parent, tokens))
            found += [_trim(entry, top_k) for entry in block.entries]
            parent = block.id
        return found

    def store(self, ids: list[int], entries: list[TokenLogprob], top_k: int) -> None:
        """Keeps the whole blocks of a prompt whose entries (one per token) are all known."""
        if len(entries) != len(ids):
            raise ValueError(f"{len(entries)} logprob entries for a prompt of {len(ids)} tokens")
        parent = ROOT_ID
        for start, tokens in self._keys(ids):
            key = (parent, tokens)
            block = self._blocks.get(key)
            covered = entries[start : start + self.block_tokens]
            if block is None:
                block = _Block(next(self._ids), covered, top_k, _cost(covered))
                self._blocks[key] = block
                self.size_values += block.cost
            elif block.top_k < top_k:  # richer entries replace poorer ones; the id stays
                self.size_values += _cost(covered) - block.cost
                block.entries, block.top_k, block.cost = covered, top_k, _cost(covered)
            self._blocks.move_to_end(key)
            parent = block.id
        self._evict()

    def clear(self) -> None:
        self._blocks.clear()
        self.size_values = 0

    def _keys(self, ids: list[int]) -> list[tuple[int, tuple[int, ...]]]:
        """(first covered position, key tokens) of each whole block of the prompt."""
        size = self.block_tokens
        keys = []
        for start in range(1, len(ids) - size + 1, size):
            lead = 0 if start == 1 else start  # block 0's key includes token 0
            keys.append((start, tuple(ids[lead : start + size])))
        return keys

    def _evict(self) -> None:
        while self.size_values > self.capacity_values and self._blocks:
            _, block = self._blocks.popitem(last=False)
            self.size_values -= block.cost


def _cost(entries: list[TokenLogprob]) -> int:
    return sum(1 + len(e.top or ()) for e in entries)


def _trim(entry: TokenLogprob, top_k: int) -> TokenLogprob:
    top = entry.top[:top_k] if entry.top is not None and top_k else None
    return TokenLogprob(entry.token_id, entry.logprob, top)
