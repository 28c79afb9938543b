"""Draft tokens for n-gram speculative decoding (prompt lookup).

Agentic and extraction outputs copy long runs from their context: a JSON field echoing the
document, a tool result quoted back, code edited in place. The request's own tokens predict
them: find the latest earlier occurrence of the sequence's last n tokens and propose the tokens
that followed it. The model then checks all proposals in one forward pass (the scheduler keeps
the longest agreeing prefix plus the model's own next token), so a good guess saves steps and a
bad one costs only the wider pass.
"""

from __future__ import annotations

from array import array

_BYTES = 4  # one int32 token


def propose_drafts(
    tokens: list[int], num_draft: int, max_ngram: int, min_ngram: int = 1
) -> list[int]:
    """Up to `num_draft` tokens that followed the latest earlier occurrence of the longest suffix
    n-gram of `tokens` (n from `max_ngram` down to `min_ngram`); [] when none occurs.

    The search is `bytes.rfind` over the int32 encoding, in C: an unaligned hit (a match
    straddling token boundaries) is skipped by searching again to its left.
    """
    length = len(tokens)
    if num_draft <= 0 or length < 2:
        return []
    data = array("i", tokens).tobytes()
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        pattern = data[(length - n) * _BYTES :]
        # The occurrence must end before the last token, so at least one token follows it.
        end = (length - 1) * _BYTES
        pos = data.rfind(pattern, 0, end)
        while pos > 0 and pos % _BYTES:
            pos = data.rfind(pattern, 0, pos + len(pattern) - 1)
        if pos >= 0 and pos % _BYTES == 0:
            start = pos // _BYTES + n
            return tokens[start : start + num_draft]
    return []
