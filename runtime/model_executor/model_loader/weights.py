"""Reading configs and weight tensors from a `ModelSource`.

Weights stream as (HF name, tensor) pairs so a model's `load_weights` can shard them without
holding a second full copy: safetensors files are opened one at a time (with an index or a
glob), GGUF files are dequantized by transformers, and `dummy` fills random values instead.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ...config.model_source import ModelSource
from ...config.server_args import LOAD_FORMATS


class WeightLoadError(ValueError):
    pass


def load_hf_config(source: ModelSource) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.directory, **source.hf_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightLoadError(
            f"cannot read the model config in {source.directory!r}: {exc}"
        ) from exc


def iter_weights(
    source: ModelSource, hf_config: Any, load_format: str = "auto"
) -> Iterator[tuple[str, torch.Tensor]]:
    if load_format not in LOAD_FORMATS:
        raise WeightLoadError(f"unknown load_format {load_format!r}; choose one of {LOAD_FORMATS}")
    if load_format == "dummy":
        raise WeightLoadError("dummy weights are not read from files; use init_dummy_weights")
    if source.gguf_file and load_format in ("auto", "gguf"):
        yield from _iter_gguf(source, hf_config)
    elif load_format == "gguf":
        raise WeightLoadError(f"load_format='gguf' but {source.directory!r} is not a GGUF model")
    else:
        yield from _iter_safetensors(source.directory)


def _safetensors_files(directory: str) -> list[str]:
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        try:
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise WeightLoadError(f"corrupt safetensors index {index_path!r}: {exc}") from exc
        files = [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            raise WeightLoadError(f"safetensors index names missing files: {absent}")
        return files
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise WeightLoadError(f"no *.safetensors weight files in {directory!r}")
    return files


def _iter_safetensors(directory: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    files = _safetensors_files(directory)
    for path in tqdm(files, desc="Loading safetensors", unit="file", disable=len(files) < 2):
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield name, f.get_tensor(name)
        except SafetensorError as exc:
            raise WeightLoadError(f"corrupt weight file {path!r}: {exc}") from exc


def _iter_gguf(source: ModelSource, hf_config: Any) -> Iterator[tuple[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # transformers needs a model to map GGUF names onto HF names; a meta-device one costs nothing.
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(hf_config)
    try:
        checkpoint = load_gguf_checkpoint(
            source.gguf_path, return_tensors=True, model_to_load=skeleton
        )
    except Exception as exc:  # gguf raises many types for a damaged file
        raise WeightLoadError(f"cannot read GGUF file {source.gguf_path!r}: {exc}") from exc
    for name, tensor in checkpoint["tensors"].items():
        yield name, tensor if isinstance(tensor, torch.Tensor) else torch.from_numpy(tensor)


def init_dummy_weights(model: nn.Module, seed: int = 0) -> None:
    """Random weights of the configured shape: speed does not depend on the values."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.data.fill_(1.0)
            continue
        # Drawn on the parameter's own device: an 8B model on the CPU would take minutes.
        device = param.device
        if device not in generators:
            generators[device] = torch.Generator(device=device).manual_seed(seed)
        param.data.normal_(0.0, 0.02, generator=generators[device])
