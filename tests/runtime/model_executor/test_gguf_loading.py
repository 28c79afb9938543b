"""GGUF weights read by model_loader/gguf_weights.py equal transformers' `load_gguf_checkpoint`
bit for bit (names, order, dtypes, values) on small Llama, Qwen2 and Qwen3 files written with
gguf-py's writer, in every tensor type they mix; other files go to transformers; the GGUF config
is read once and then comes from the cache, equal to transformers' own."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as GGML
from transformers import AutoModelForCausalLM

from radixserve.runtime.config.model_source import resolve_model_source
from radixserve.runtime.model_executor.model_loader import gguf_weights, weights
from radixserve.utils.cache_dir import CACHE_DIR_ENV

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, VOCAB, LAYERS = 64, 4, 2, 16, 96, 128, 2
# Each tensor kind's type in the file: blocks of three kinds, float16 and float32.
TYPES = {"attn_q": GGML.Q4_1, "attn_k": GGML.Q8_0, "attn_v": GGML.Q4_0, "attn_output": GGML.F16,
         "ffn_gate": GGML.Q4_1, "ffn_up": GGML.Q5_0, "ffn_down": GGML.Q8_0}  # fmt: skip


def write_gguf(
    path: Path, architecture: str, head_count_kv: bool = True, lm_head: bool = False
) -> None:
    rng = np.random.default_rng(len(architecture))
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTER)
    writer.add_head_count(HEADS)
    if head_count_kv:
        writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])  # the config's vocab_size

    def add(name: str, shape: tuple[int, ...], kind: GGML) -> None:
        values = rng.standard_normal(shape).astype(np.float32)
        if kind == GGML.F32:
            writer.add_tensor(name, values)
        elif kind == GGML.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)

    kv = KV_HEADS if head_count_kv else HEADS
    shapes = {
        "attn_q": (HEADS * HEAD_DIM, HIDDEN), "attn_k": (kv * HEAD_DIM, HIDDEN),
        "attn_v": (kv * HEAD_DIM, HIDDEN), "attn_output": (HIDDEN, HEADS * HEAD_DIM),
        "ffn_gate": (INTER, HIDDEN), "ffn_up": (INTER, HIDDEN), "ffn_down": (HIDDEN, INTER),
    }  # fmt: skip
    add("token_embd.weight", (VOCAB, HIDDEN), GGML.Q8_0)
    for layer in range(LAYERS):
        for name, shape in shapes.items():
            add(f"blk.{layer}.{name}.weight", shape, TYPES[name])
        add(f"blk.{layer}.attn_norm.weight", (HIDDEN,), GGML.F32)
        add(f"blk.{layer}.ffn_norm.weight", (HIDDEN,), GGML.F32)
        if architecture == "qwen2":
            for name in ("attn_q", "attn_k", "attn_v"):
                add(f"blk.{layer}.{name}.bias", (shapes[name][0],), GGML.F32)
        if architecture == "qwen3":
            add(f"blk.{layer}.attn_q_norm.weight", (HEAD_DIM,), GGML.F32)
            add(f"blk.{layer}.attn_k_norm.weight", (HEAD_DIM,), GGML.F32)
    add("output_norm.weight", (HIDDEN,), GGML.F32)
    if lm_head:
        add("output.weight", (VOCAB, HIDDEN), GGML.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def by_transformers(path: Path) -> tuple[Any, dict[str, torch.Tensor], torch.nn.Module]:
    source = resolve_model_source(str(path))
    config = weights.load_hf_config(source)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return config, dict(weights._iter_gguf_by_transformers(str(path), skeleton)), skeleton


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    ("architecture", "head_count_kv", "lm_head"),
    [("llama", True, False), ("llama", False, True), ("qwen2", True, False),
     ("qwen3", True, True)],
)  # fmt: skip
def test_tensors_equal_transformers_bit_for_bit(
    tmp_path: Path, architecture: str, head_count_kv: bool, lm_head: bool
) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, architecture, head_count_kv, lm_head)
    config, expected, skeleton = by_transformers(path)
    tensors = gguf_weights.plan(str(path), skeleton, config)
    assert tensors is not None
    got = list(tensors)
    assert len(tensors) == len(got)
    assert [name for name, _ in got] == list(expected)  # the same names, in the same order
    for name, tensor in got:
        assert tensor.dtype == expected[name].dtype, name
        assert torch.equal(tensor, expected[name]), name
    # The reordering ran where transformers' does (a llama file stating both head counts).
    q_name = "model.layers.0.self_attn.q_proj.weight"
    raw = gguf.quants.dequantize(
        gguf.GGUFReader(str(path)).get_tensor(1).data, GGML.Q4_1
    )  # token_embd is tensor 0, blk.0.attn_q tensor 1
    reordered = architecture == "llama" and head_count_kv
    assert torch.equal(dict(got)[q_name], torch.from_numpy(raw)) != reordered


def test_the_weights_iterator_reads_them_this_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, "llama")
    config, expected, _ = by_transformers(path)
    source = resolve_model_source(str(path))

    def not_this_way(*_: object) -> None:
        raise AssertionError("read by transformers")

    monkeypatch.setattr(weights, "_iter_gguf_by_transformers", not_this_way)
    got = dict(weights.iter_weights(source, config))
    assert list(got) == list(expected)
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_other_files_are_left_to_transformers(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, "llama")
    config, _, skeleton = by_transformers(path)
    renamed = copy.deepcopy(config)
    renamed.model_type = "mistral"  # transformers' own reading of some "llama" files
    assert gguf_weights.plan(str(path), skeleton, renamed) is None
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(path.read_bytes()[:200])
    assert gguf_weights.plan(str(damaged), skeleton, config) is None


def test_the_config_is_read_once_then_cached(tmp_path: Path, own_cache: Path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, "qwen2")
    source = resolve_model_source(str(path))
    first = weights.load_hf_config(source)
    [cached_file] = list((own_cache / "gguf-configs").iterdir())
    second = weights.load_hf_config(source)
    assert type(second) is type(first) and second.to_dict() == first.to_dict()
    assert second.num_key_value_heads == KV_HEADS and second.vocab_size == VOCAB

    cached_file.write_text("{not json")  # a damaged cache file: read from the GGUF again
    assert weights.load_hf_config(source).to_dict() == first.to_dict()
    assert weights._cached_gguf_config(str(path)) is not None  # and written again

    write_gguf(path, "llama")  # a new file under the same name gets its own entry
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1))
    assert weights.load_hf_config(source).model_type == "llama"
    assert len(list((own_cache / "gguf-configs").iterdir())) == 2
