"""Loading the tokenizer without torch, so the HTTP and detokenizer processes never import it.

transformers' `AutoTokenizer` imports torch (its GGUF support does, at import time), and reading a
GGUF file's vocabulary needs transformers' GGUF converter, which imports torch too. So:

    HF directory with tokenizer.json  -> the class named in tokenizer_config.json, loaded directly
    GGUF file                         -> converted once into an HF tokenizer directory in the cache
                                         (by a subprocess when this process has no torch), then
                                         loaded as above
    anything else (no tokenizer.json) -> AutoTokenizer, which does import torch

The conversion is keyed by the GGUF file's path, size and modification time and guarded by a
file lock, so the processes of one server start convert it once between them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ...utils.cache_dir import cache_dir, file_key
from .model_source import ModelSource

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TOKENIZER_FILE = "tokenizer.json"


class TokenizerLoadError(ValueError):
    pass


def load_tokenizer(
    source: ModelSource, tokenizer_path: str | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer of `source`, or the one in `tokenizer_path` when given."""
    return load_tokenizer_directory(tokenizer_directory(source, tokenizer_path))


def tokenizer_directory(source: ModelSource, tokenizer_path: str | None = None) -> str:
    """The HF tokenizer directory `load_tokenizer` reads: `tokenizer_path` when given, a GGUF
    file's converted tokenizer, or the model's directory. The server reports it as its
    tokenizer_path, so clients (SGLang's bench_serving, `AutoTokenizer.from_pretrained`) load
    the same tokenizer from it, which they cannot do from a GGUF file."""
    if tokenizer_path:
        return tokenizer_path
    if source.gguf_path is not None:
        return gguf_tokenizer_dir(source.gguf_path)
    return source.directory


def load_tokenizer_directory(directory: str) -> PreTrainedTokenizerBase:
    try:
        return _load_directory(directory)
    except (OSError, ValueError, KeyError) as exc:
        raise TokenizerLoadError(f"cannot load a tokenizer from {directory!r}: {exc}") from exc


def _load_directory(directory: str) -> PreTrainedTokenizerBase:
    if not os.path.isfile(os.path.join(directory, TOKENIZER_FILE)):
        from transformers import AutoTokenizer  # slow or sentencepiece-only tokenizers

        return AutoTokenizer.from_pretrained(directory)
    import transformers

    name = _tokenizer_class_name(directory)
    cls = getattr(transformers, name, None) if name else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase)):
        cls = transformers.PreTrainedTokenizerFast
    return cls.from_pretrained(directory)


def _tokenizer_class_name(directory: str) -> str | None:
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        name = json.load(f).get("tokenizer_class")
    return name if isinstance(name, str) else None


# --- GGUF: convert once, load from the cache ---------------------------------------------------


def gguf_tokenizer_dir(gguf_path: str) -> str:
    """An HF tokenizer directory holding the GGUF file's tokenizer, converted on first use."""
    root = os.path.join(cache_dir(), "tokenizers")
    target = os.path.join(root, file_key(gguf_path))
    if os.path.isfile(os.path.join(target, TOKENIZER_FILE)):
        return target
    os.makedirs(root, exist_ok=True)
    with _file_lock(target + ".lock"):
        if not os.path.isfile(os.path.join(target, TOKENIZER_FILE)):  # another process won
            _convert(gguf_path, target)
    return target


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(gguf_path: str, target: str) -> None:
    """Writes the tokenizer into a temporary sibling, then renames it into place, so a reader
    never sees half a directory."""
    staging = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(target))
    try:
        if "torch" in sys.modules:  # it costs this process nothing more
            convert_gguf_tokenizer(gguf_path, staging)
        else:
            command = [sys.executable, "-m", __name__, gguf_path, staging]
            done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
            if done.returncode != 0:
                raise TokenizerLoadError(
                    f"converting the tokenizer of {gguf_path!r} failed: {done.stderr[-2000:]}"
                )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _child_env() -> dict[str, str]:
    """This environment, with the folder that holds the `radixserve` package first on the path,
    so the child imports the same package whether it was installed or run from a checkout."""
    root_package = sys.modules[__name__.split(".")[0]]  # `radixserve`, imported before us
    package_parent = os.path.dirname(os.path.abspath(list(root_package.__path__)[0]))
    paths = [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def convert_gguf_tokenizer(gguf_path: str, out_dir: str) -> None:
    from transformers import AutoTokenizer  # imports torch: run where that is fine

    directory, file_name = os.path.split(os.path.abspath(gguf_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file_name)
    except (OSError, ValueError, KeyError) as exc:
        raise TokenizerLoadError(f"cannot read a tokenizer from {gguf_path!r}: {exc}") from exc
    tokenizer.save_pretrained(out_dir)


if __name__ == "__main__":
    convert_gguf_tokenizer(sys.argv[1], sys.argv[2])


# --- narrowing transformers' broad return types to what a single input gives -------------------


def decode_text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], **options: bool) -> str:
    """`tokenizer.decode` of one id sequence: a string (transformers types it str | list)."""
    text = tokenizer.decode(list(ids), **options)
    if not isinstance(text, str):
        raise TypeError(f"the tokenizer decoded one sequence into {type(text).__name__}")
    return text


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], **template_args: Any
) -> str:
    """The chat template applied to `messages`, as text, ready for the assistant's turn."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **template_args
    )
    if not isinstance(text, str):
        raise TypeError(f"the chat template rendered {type(text).__name__}, not text")
    return text
