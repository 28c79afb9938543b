"""Tokenizer loading without torch: the same tokenizer AutoTokenizer gives, converted once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from radixserve.runtime.config.model_source import resolve_model_source
from radixserve.runtime.config.tokenizer import (
    TokenizerLoadError,
    gguf_tokenizer_dir,
    load_tokenizer,
)
from radixserve.utils.cache_dir import CACHE_DIR_ENV
from tests.runtime.smollm2 import smollm2_tokenizer
from tests.runtime.torch_blocker import BLOCK_TORCH, BLOCKED

pytestmark = pytest.mark.slow

TEXTS = ["Hello world", "naïve café 🙂 日本語", "  spaces\n\tand tabs", "<|im_start|>user"]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]


def test_the_embedded_tokenizer_equals_what_autotokenizer_reads_from_the_gguf() -> None:
    from transformers import AutoTokenizer

    source = resolve_model_source(None)
    ours = smollm2_tokenizer()
    reference = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    for text in TEXTS:
        for special in (True, False):
            ids = ours.encode(text, add_special_tokens=special)
            assert ids == reference.encode(text, add_special_tokens=special)
        assert ours.decode(ids) == reference.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(
            ids, skip_special_tokens=True
        )
        assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    for generation in (True, False):
        kwargs = {"tokenize": False, "add_generation_prompt": generation}
        assert ours.apply_chat_template(CHAT, **kwargs) == reference.apply_chat_template(
            CHAT, **kwargs
        )
    assert (ours.eos_token_id, ours.bos_token_id) == (
        reference.eos_token_id,
        reference.bos_token_id,
    )
    assert ours.all_special_ids == reference.all_special_ids and len(ours) == len(reference)


def test_a_tokenizer_directory_loads_as_given(tmp_path: Path) -> None:
    smollm2_tokenizer().save_pretrained(tmp_path)
    again = load_tokenizer(resolve_model_source(None), str(tmp_path))
    assert again.encode(TEXTS[1]) == smollm2_tokenizer().encode(TEXTS[1])
    with pytest.raises(TokenizerLoadError, match="cannot load a tokenizer"):
        load_tokenizer(resolve_model_source(None), str(tmp_path / "missing"))


def test_a_gguf_tokenizer_is_converted_once_by_a_process_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh cache: a process that refuses torch converts the GGUF tokenizer in a child
    process, loads it and encodes; later loads reuse the converted directory."""
    env = {**os.environ, CACHE_DIR_ENV: str(tmp_path)}
    code = BLOCK_TORCH + textwrap.dedent(
        """
        from radixserve.runtime.config.model_source import resolve_model_source
        from radixserve.runtime.config.tokenizer import load_tokenizer
        print("IDS", load_tokenizer(resolve_model_source(None)).encode("Hello world"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and BLOCKED not in done.stdout, done.stdout + done.stderr
    assert f"IDS {smollm2_tokenizer().encode('Hello world')}" in done.stdout
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    gguf_path = resolve_model_source(None).gguf_path
    assert gguf_path is not None
    directory = gguf_tokenizer_dir(gguf_path)
    assert directory.startswith(str(tmp_path)) and os.path.isfile(f"{directory}/tokenizer.json")
    stamp = os.stat(directory).st_mtime_ns
    assert gguf_tokenizer_dir(gguf_path) == directory and os.stat(directory).st_mtime_ns == stamp
    leftovers = [p for p in os.listdir(os.path.dirname(directory)) if p.startswith(".converting")]
    assert leftovers == []
