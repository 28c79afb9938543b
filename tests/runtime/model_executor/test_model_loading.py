"""Model sources and weight files: every broken input is a clear error, not a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from radixserve.runtime.config.model_source import ModelSourceError, resolve_model_source
from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.model_loader.weights import WeightLoadError
from radixserve.runtime.model_executor.model_runner import ModelRunner
from radixserve.runtime.model_executor.models import UnsupportedArchitectureError
from tests.runtime.tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny"))


def runner(path: Path | str, **kw: object) -> ModelRunner:
    return ModelRunner(ServerArgs(model_path=str(path), max_total_tokens=256, device="cpu", **kw))


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_embedded_default_resolves_to_gguf() -> None:
    source = resolve_model_source(None)
    assert source.gguf_file and source.gguf_file.endswith(".gguf")
    assert source.name == "SmolLM2-135M-Instruct"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_source(str(tmp_path / "nowhere"))


def test_unknown_architecture(tiny_dir: Path, tmp_path: Path) -> None:
    path = copy_model(tiny_dir, tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["MadeUpForCausalLM"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="MadeUpForCausalLM.*LlamaForCausalLM"):
        runner(path)


def test_missing_weight_files(tiny_dir: Path, tmp_path: Path) -> None:
    path = copy_model(tiny_dir, tmp_path / "m")
    for f in path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(WeightLoadError, match="no \\*.safetensors"):
        runner(path)


def test_corrupt_weight_file(tiny_dir: Path, tmp_path: Path) -> None:
    path = copy_model(tiny_dir, tmp_path / "m")
    for f in path.glob("*.safetensors"):
        f.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightLoadError, match="corrupt weight file"):
        runner(path)


def test_truncated_weight_file_names_missing_tensors(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = copy_model(tiny_dir, tmp_path / "m")
    (weights,) = path.glob("*.safetensors")
    tensors = load_file(weights)
    tensors.pop("model.layers.1.self_attn.k_proj.weight")
    save_file(tensors, weights)
    with pytest.raises(ValueError, match="missing weights.*qkv_proj.weight\\[k\\]"):
        runner(path)


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="not a .gguf"):
        resolve_model_source(str(bogus))


def test_dummy_weights_need_no_files(tiny_dir: Path, tmp_path: Path) -> None:
    path = copy_model(tiny_dir, tmp_path / "m")
    for f in path.glob("*.safetensors"):
        f.unlink()
    r = runner(path, load_format="dummy")
    assert r.model.layers[0].self_attn.qkv_proj.weight.abs().sum() > 0
