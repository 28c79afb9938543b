"""Each token's own text and bytes, for logprob listings (OpenAI's `tokens`, `bytes`).

Decoding a single id of a byte-level BPE vocabulary gives U+FFFD for a token that holds part of a
multi-byte character; the token's vocabulary string maps back to its exact bytes instead.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ...config.tokenizer import decode_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@functools.cache
def _byte_decoder() -> dict[str, int]:
    # GPT-2's reversible byte <-> printable-character table used by byte-level BPE vocabularies:
    # printable Latin-1 bytes map to themselves, the rest to code points from 256 upwards.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


class TokenTexts:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, bytes]] = {}

    def text(self, token_id: int) -> str:
        return self._lookup(token_id)[0]

    def bytes(self, token_id: int) -> bytes:
        return self._lookup(token_id)[1]

    def _lookup(self, token_id: int) -> tuple[str, bytes]:
        found = self._cache.get(token_id)
        if found is None:
            found = self._cache[token_id] = self._compute(token_id)
        return found

    def _compute(self, token_id: int) -> tuple[str, bytes]:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        decoder = _byte_decoder()
        if isinstance(piece, str) and piece and all(c in decoder for c in piece):
            raw = bytes(decoder[c] for c in piece)
            special = piece in getattr(self.tokenizer, "all_special_tokens", ())
            return (piece if special else raw.decode("utf-8", errors="replace")), raw
        text = decode_text(self.tokenizer, [token_id])
        return text, text.encode("utf-8")
