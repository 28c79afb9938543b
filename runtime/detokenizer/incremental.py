"""Turning a growing list of token ids into text deltas, and stopping on stop strings.

Decoding token by token breaks multi-byte characters and the tokenizer's space handling, so each
request keeps two offsets into its ids and decodes a short window:

    ids:   ..... | surr ........ read | new ids ... |
                   ^ prefix_offset   ^ read_offset
    delta = decode(ids[prefix_offset:]) minus decode(ids[prefix_offset:read_offset])

A delta that ends in U+FFFD (an incomplete UTF-8 sequence) is held back until the next token.
Stop strings: text that could still become a stop string is held back too, so a client never sees
a partial stop string; a full match truncates the text before the stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config.tokenizer import decode_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPLACEMENT_CHAR = "\ufffd"


@dataclass(slots=True)
class DetokenizeResult:
    delta: str  # text safe to emit now
    matched_stop: str | None = None  # set when a stop string ended the request


@dataclass(slots=True)
class IncrementalDetokenizer:
    tokenizer: PreTrainedTokenizerBase
    stop_strings: Sequence[str] = ()
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    ids: list[int] = field(default_factory=list)
    prefix_offset: int = 0
    read_offset: int = 0
    text: str = ""  # all text decoded so far (complete characters)
    emitted: int = 0  # characters of `text` already handed out
    stopped: bool = False

    def _decode(self, ids: Sequence[int]) -> str:
        return decode_text(
            self.tokenizer,
            ids,
            skip_special_tokens=self.skip_special_tokens,
            spaces_between_special_tokens=self.spaces_between_special_tokens,
        )

    def add(self, new_ids: Sequence[int], final: bool = False) -> DetokenizeResult:
        """Appends tokens; returns what may be shown now. `final` flushes held-back text."""
        if self.stopped:
            return DetokenizeResult("")
        self.ids.extend(new_ids)
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full_text = self._decode(self.ids[self.prefix_offset :])
        if len(full_text) > len(prefix_text) and (
            final or not full_text.endswith(REPLACEMENT_CHAR)
        ):
            self.text += full_text[len(prefix_text) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
        return self._emit(final)

    def _emit(self, final: bool) -> DetokenizeResult:
        match_at, matched = self._find_stop()
        if matched is not None:
            self.text = self.text[:match_at]
            self.stopped = True
            delta = self.text[self.emitted :]
            self.emitted = len(self.text)
            return DetokenizeResult(delta, matched)
        safe_end = len(self.text) if final else len(self.text) - self._partial_stop_len()
        safe_end = max(safe_end, self.emitted)
        delta = self.text[self.emitted : safe_end]
        self.emitted = safe_end
        return DetokenizeResult(delta)

    def _find_stop(self) -> tuple[int, str | None]:
        if not self.stop_strings:
            return -1, None
        longest = max(len(s) for s in self.stop_strings)
        # Only text that may overlap not-yet-emitted characters needs searching.
        start = max(0, self.emitted - longest + 1)
        best_at, best = -1, None
        for stop in self.stop_strings:
            at = self.text.find(stop, start)
            if at != -1 and (best is None or at < best_at):
                best_at, best = at, stop
        return best_at, best

    def _partial_stop_len(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        held = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:n]):
                    held = n
                    break
        return held
