"""Session-wide handles on the embedded SmolLM2 model (loading costs ~10 s, so load once)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def smollm2_tokenizer() -> Any:
    from radixserve.runtime.config.model_source import resolve_model_source
    from radixserve.runtime.config.tokenizer import load_tokenizer

    return load_tokenizer(resolve_model_source(None))


def chat_prompt(tokenizer: Any, question: str) -> str:
    """One user turn in the model's chat template, ready for the assistant's answer."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
