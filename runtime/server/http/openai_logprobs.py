"""Logprobs in OpenAI's two formats, from a request's accumulated (logprob, token id) lists.

    completions: {tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset}
    chat:        {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}

Streaming sends each token once: a `LogprobCursor` remembers how many were sent and where the
next token's text starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..output import LogprobEntry, RequestOutputBuilder
from .openai_protocol import (
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionLogprobs,
    TopLogprob,
)
from .token_text import TokenTexts


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    logprob: float | None  # None for the first prompt token: nothing predicts it
    top: list[LogprobEntry] | None  # best first; None when not asked or not defined


@dataclass(slots=True)
class LogprobCursor:
    tokens_sent: int = 0  # output tokens whose logprobs went out already
    text_offset: int = 0  # completions' text_offset of the next token
    started: bool = False  # the first chunk (echo, chat role) went out


def output_entries(output: RequestOutputBuilder, start: int = 0) -> list[TokenLogprob]:
    tops = output.output_top_logprobs
    return [
        TokenLogprob(token, lp, tops[i] if i < len(tops) else None)
        for i, (lp, token, _) in enumerate(output.output_logprobs)
        if i >= start
    ]


def prompt_entries(output: RequestOutputBuilder) -> list[TokenLogprob]:
    tops = output.input_top_logprobs
    return [
        TokenLogprob(token, lp, tops[i] if i < len(tops) else None)
        for i, (lp, token, _) in enumerate(output.input_logprobs)
    ]


def completion_logprobs(
    texts: TokenTexts, entries: list[TokenLogprob], cursor: LogprobCursor | None = None
) -> CompletionLogprobs:
    cursor = cursor or LogprobCursor()
    result = CompletionLogprobs([], [], [], [])
    for entry in entries:
        token = texts.text(entry.token_id)
        result.tokens.append(token)
        result.token_logprobs.append(entry.logprob)
        result.text_offset.append(cursor.text_offset)
        cursor.text_offset += len(token)
        if entry.logprob is None:
            result.top_logprobs.append(None)
            continue
        top: dict[str, float] = {}
        for lp, token_id, _ in entry.top or []:
            text = texts.text(token_id)
            # Two ids can share a text; keep the likelier, as a dict holds one.
            if lp is not None and (text not in top or lp > top[text]):
                top[text] = lp
        result.top_logprobs.append(top)
    return result


def chat_logprobs(texts: TokenTexts, entries: list[TokenLogprob]) -> ChatLogprobs:
    content = []
    for entry in entries:
        top = [
            TopLogprob(texts.text(t), lp, list(texts.bytes(t)))
            for lp, t, _ in entry.top or []
            if lp is not None
        ]
        token = entry.token_id
        logprob = entry.logprob if entry.logprob is not None else 0.0
        content.append(ChatTokenLogprob(texts.text(token), logprob, list(texts.bytes(token)), top))
    return ChatLogprobs(content)
