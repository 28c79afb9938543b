"""Reading configs and weight tensors from a `ModelSource`.

Weights stream as (HF name, tensor) pairs so a model's `load_weights` can shard them without
holding a second full copy: safetensors files are opened one at a time (with an index or a
glob), GGUF files are dequantized as transformers does it (gguf_weights.py; transformers itself
for architectures that module does not take), and `dummy` fills random values instead.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ....utils.cache_dir import cache_dir, file_key
from ...config.model_source import ModelSource
from ...config.server_args import LOAD_FORMATS
from . import gguf_weights

logger = logging.getLogger(__name__)


class WeightLoadError(ValueError):
    pass


def load_hf_config(source: ModelSource) -> Any:
    from transformers import AutoConfig

    if source.gguf_path is not None:
        cached = _cached_gguf_config(source.gguf_path)
        if cached is not None:
            return cached
    try:
        config = AutoConfig.from_pretrained(source.directory, **source.hf_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightLoadError(
            f"cannot read the model config in {source.directory!r}: {exc}"
        ) from exc
    if source.gguf_path is not None:
        _cache_gguf_config(source.gguf_path, config)
    return config


# --- GGUF configs: read once, kept as JSON --------------------------------------------------
# transformers reads a GGUF's config through gguf-py's reader, which decodes all of its metadata
# (the vocabulary included): ~10 s for the embedded model, on every start. The config it builds
# is kept under the cache directory, keyed by the file and transformers' version.


def _gguf_config_path(gguf_path: str) -> str:
    import transformers

    name = file_key(gguf_path, transformers.__version__) + ".json"
    return os.path.join(cache_dir(), "gguf-configs", name)


def _cached_gguf_config(gguf_path: str) -> Any | None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        with open(_gguf_config_path(gguf_path)) as f:
            fields = json.load(f)
        return CONFIG_MAPPING[fields["model_type"]].from_dict(fields)
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: read the file
        return None


def _cache_gguf_config(gguf_path: str, config: Any) -> None:
    """Written under a temporary name and renamed, so a reader never sees half a file; a cache
    directory that cannot be written only costs the next start its time."""
    try:
        target = _gguf_config_path(gguf_path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=os.path.dirname(target), suffix=".tmp", delete=False
        ) as f:
            json.dump(config.to_dict(), f)
        os.replace(f.name, target)
    except OSError as exc:
        logger.info("GGUF config not cached: %s", exc)


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

    path = source.gguf_path
    assert path is not None
    # GGUF names map onto HF names through a model; a meta-device one costs nothing.
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(hf_config)
    tensors = gguf_weights.plan(path, skeleton, hf_config)
    if tensors is None:
        yield from _iter_gguf_by_transformers(path, skeleton)
        return
    try:
        yield from tqdm(tensors, desc="Reading GGUF tensors", unit="tensor", total=len(tensors))
    except (ValueError, NotImplementedError) as exc:  # a block type gguf-py cannot dequantize
        raise WeightLoadError(f"cannot read GGUF file {path!r}: {exc}") from exc


def _iter_gguf_by_transformers(
    path: str, skeleton: nn.Module
) -> Iterator[tuple[str, torch.Tensor]]:
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        checkpoint = load_gguf_checkpoint(path, return_tensors=True, model_to_load=skeleton)
    except Exception as exc:  # gguf raises many types for a damaged file
        raise WeightLoadError(f"cannot read GGUF file {path!r}: {exc}") from exc
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
