"""Products over GGUF blocks (kernels/cpu/quantized.py, native/quant_gemm.c) and the blocks read
from a GGUF file (model_loader/gguf_blocks.py): the compiled dequantization equals gguf-py's bit
for bit, every product over blocks equals the float32 product over the dequantized weight bit for
bit, row counts choose blocks or the float32 weight, and a GGUF written by gguf-py's own writer
reads back as the blocks transformers' dequantization (with its q/k reordering) stands for."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as GGML
from torch import nn

from radixserve.kernels.cpu import small_gemm
from radixserve.kernels.cpu.quantized import (
    Kind,
    QuantizedWeight,
    concat_rows,
    from_gguf_blocks,
    reference_dequantize,
)
from radixserve.runtime.model_executor.model_loader.gguf_blocks import (
    read_llama_blocks,
    verified_blocks,
)

KINDS: dict[Kind, GGML] = {"q4_1": GGML.Q4_1, "q8_0": GGML.Q8_0}


pytestmark = pytest.mark.usefixtures("restore_cpu_state")


def gguf_bytes(kind: Kind, weights: np.ndarray) -> np.ndarray:
    """gguf-py's own quantization of float32 `weights` [rows, cols]: the file's block bytes."""
    return gguf.quants.quantize(weights.astype(np.float32), KINDS[kind])


def random_blocks(
    kind: Kind, rows: int, cols: int, seed: int
) -> tuple[QuantizedWeight, np.ndarray]:
    """Blocks from gguf-py's quantizer, with some blocks' scales forced to 0, -0 and subnormal
    float16 values, and the bytes they came from."""
    rng = np.random.default_rng(seed)
    raw = gguf_bytes(kind, rng.standard_normal((rows, cols)) * rng.uniform(0.01, 3))
    blocks = raw.reshape(rows, cols // 32, -1).copy()
    specials = np.array([0.0, -0.0, 6e-8, -3e-5], dtype=np.float16).view(np.uint8).reshape(4, 2)
    for i, special in enumerate(specials):
        blocks[i % rows, i % (cols // 32), :2] = special  # d
    return from_gguf_blocks(kind, blocks.reshape(rows, -1), (rows, cols)), blocks.reshape(rows, -1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_dequantization_equals_gguf_py_bit_for_bit(
    kernel: small_gemm.SmallGemm, kind: Kind
) -> None:
    blocks, raw = random_blocks(kind, 37, 96, seed=1)
    expected = torch.from_numpy(gguf.quants.dequantize(raw, KINDS[kind]).reshape(37, 96).copy())
    assert torch.equal(reference_dequantize(blocks), expected)
    assert torch.equal(kernel.dequantize(blocks), expected)
    assert torch.equal(kernel.dequantize(blocks).view(torch.int32), expected.view(torch.int32))


# Rows cover every tile of x (1-4) and remainders; out features every remainder of the 1-4 W rows
# a quantized tile takes; in features one block, two, and the embedded model's widths.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 9, 16])
@pytest.mark.parametrize(("out_features", "in_features"), [(1, 32), (11, 64), (97, 576), (9, 1536)])
def test_products_over_blocks_equal_float32_products_bit_for_bit(
    kernel: small_gemm.SmallGemm,
    threads: int,
    kind: Kind,
    rows: int,
    out_features: int,
    in_features: int,
) -> None:
    kernel.set_threads(threads)
    blocks, _ = random_blocks(kind, out_features, in_features, seed=rows + out_features)
    dense = kernel.dequantize(blocks)
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, in_features, generator=gen)
    bias = torch.randn(out_features, generator=gen)
    for b in (None, bias):
        over_blocks = kernel.linear(x, None, b, blocks=blocks)
        assert torch.equal(over_blocks, kernel.linear(x, dense, b))
    wide = torch.randn(rows, in_features * 2, generator=gen)[:, ::2]  # strided elements
    assert torch.equal(kernel.linear(wide, None, None, blocks), kernel.linear(wide, dense))


@pytest.mark.parametrize("kind", list(KINDS))
def test_row_counts_choose_blocks_or_the_float32_weight(
    kernel: small_gemm.SmallGemm, kind: Kind
) -> None:
    """Given both, products of up to quantized_rows() rows read the blocks, of more than
    MEASURED_ROWS the float32 W, and in between each form in turn until both are timed, then
    mostly the faster (told apart here by a float32 W that is not the blocks' dequantization)."""
    blocks, _ = random_blocks(kind, 20, 64, seed=3)
    other = kernel.dequantize(blocks) + 1.0
    limit = kernel.quantized_rows(blocks)
    assert 1 <= limit <= 8
    kernel.set_measured_forms(True)
    try:
        for rows in [*range(1, limit + 3), small_gemm.MEASURED_ROWS, small_gemm.MEASURED_ROWS + 1]:
            x = torch.randn(rows, 64)
            over_blocks = kernel.linear(x, None, None, blocks)
            over_other = kernel.linear(x, other)
            forms = []
            for _ in range(12):
                out = kernel.linear(x, other, None, blocks)
                assert torch.equal(out, over_blocks) or torch.equal(out, over_other), rows
                forms.append("blocks" if torch.equal(out, over_blocks) else "float32")
            if rows <= limit:
                assert set(forms) == {"blocks"}, rows
            elif rows > small_gemm.MEASURED_ROWS:
                assert set(forms) == {"float32"}, rows
            else:  # the first six calls alternate, the blocks first
                assert forms[:6] == ["blocks", "float32"] * 3, rows
        kernel.set_measured_forms(False)
        x = torch.randn(limit + 1, 64)
        assert torch.equal(kernel.linear(x, other, None, blocks), kernel.linear(x, other))
    finally:
        kernel.set_measured_forms(True)


def test_bad_blocks_and_shapes_are_refused(kernel: small_gemm.SmallGemm) -> None:
    blocks, _ = random_blocks("q4_1", 4, 64, seed=4)
    with pytest.raises(ValueError, match="whole blocks"):
        QuantizedWeight("q4_1", blocks.codes, blocks.scales, (4, 60))
    with pytest.raises(ValueError, match="codes"):
        QuantizedWeight("q4_1", blocks.codes[:, :8].contiguous(), blocks.scales, (4, 64))
    with pytest.raises(ValueError, match="scales"):
        QuantizedWeight("q4_1", blocks.codes, blocks.scales[..., :1].contiguous(), (4, 64))
    with pytest.raises(ValueError, match="do not match"):
        kernel.linear(torch.randn(1, 32), None, None, blocks)
    with pytest.raises(ValueError, match="differ in shape"):
        kernel.linear(torch.randn(1, 64), torch.randn(5, 64), None, blocks)
    q8, _ = random_blocks("q8_0", 4, 64, seed=5)
    with pytest.raises(ValueError, match="cannot stack"):
        concat_rows([blocks, q8])


def test_stacked_and_reordered_rows_keep_their_values(kernel: small_gemm.SmallGemm) -> None:
    a, _ = random_blocks("q4_1", 6, 64, seed=6)
    b, _ = random_blocks("q4_1", 3, 64, seed=7)
    order = torch.tensor([2, 0, 1, 5, 4, 3])
    stacked = concat_rows([a.take_rows(order), b])
    expected = torch.cat([kernel.dequantize(a)[order], kernel.dequantize(b)])
    assert stacked.shape == (9, 64)
    assert torch.equal(kernel.dequantize(stacked), expected)


def write_tiny_llama(
    path: Path, heads: int, kv_heads: int, head_dim: int, hidden: int, states_heads: bool = True
) -> dict:
    """A one-layer llama GGUF through gguf-py's writer (metadata with a string array, as a real
    vocabulary is), its linear weights Q4_1 but the down projection float32, the embedding
    Q8_0; returns each tensor's float32 weights as transformers would load them (q/k rows
    reordered only where the file states both head counts, as transformers' processor reads
    them from there)."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    if states_heads:
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
    writer.add_token_list([f"token{i}" for i in range(300)])
    inter, vocab = 64, 96
    shapes = {
        "attn_q": (heads * head_dim, hidden),
        "attn_k": (kv_heads * head_dim, hidden),
        "attn_v": (kv_heads * head_dim, hidden),
        "attn_output": (hidden, heads * head_dim),
        "ffn_gate": (inter, hidden),
        "ffn_up": (inter, hidden),
    }
    loaded: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        raw = gguf_bytes("q4_1", rng.standard_normal(shape))
        writer.add_tensor(f"blk.0.{name}.weight", raw, raw_dtype=GGML.Q4_1)
        loaded[name] = gguf.quants.dequantize(raw, GGML.Q4_1).reshape(shape)
    writer.add_tensor("blk.0.ffn_down.weight", rng.standard_normal((hidden, inter)).astype("f4"))
    raw = gguf_bytes("q8_0", rng.standard_normal((vocab, hidden)))
    writer.add_tensor("token_embd.weight", raw, raw_dtype=GGML.Q8_0)
    loaded["token_embd"] = gguf.quants.dequantize(raw, GGML.Q8_0).reshape(vocab, hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    for name, count in (("attn_q", heads), ("attn_k", kv_heads)):  # transformers' reordering
        if not states_heads:
            break
        w = loaded[name]
        loaded[name] = (
            w.reshape(count, w.shape[0] // count // 2, 2, -1).swapaxes(2, 1).reshape(w.shape)
        )
    return loaded


@pytest.mark.parametrize("states_heads", [True, False])
def test_a_gguf_reads_back_as_the_weights_transformers_loads(
    kernel: small_gemm.SmallGemm, tmp_path: Path, states_heads: bool
) -> None:
    path = tmp_path / "tiny.gguf"
    loaded = write_tiny_llama(path, 4, 2, 8, 64, states_heads)
    found = read_llama_blocks(str(path), num_layers=1, num_heads=4, num_kv_heads=2)
    # ffn_down is float32 in the file: no blocks for it.
    assert sorted(found) == sorted([
        "layers.0.self_attn.qkv_proj.weight", "layers.0.self_attn.o_proj.weight",
        "layers.0.mlp.gate_up_proj.weight", "lm_head.weight",
    ])  # fmt: skip
    expected = {
        "layers.0.self_attn.qkv_proj.weight": ["attn_q", "attn_k", "attn_v"],
        "layers.0.self_attn.o_proj.weight": ["attn_output"],
        "layers.0.mlp.gate_up_proj.weight": ["ffn_gate", "ffn_up"],
        "lm_head.weight": ["token_embd"],
    }
    for name, parts in expected.items():
        weights = torch.from_numpy(np.concatenate([loaded[p] for p in parts]).astype("f4"))
        assert torch.equal(kernel.dequantize(found[name]), weights), name


def test_blocks_that_differ_from_the_loaded_weight_are_dropped(
    kernel: small_gemm.SmallGemm, caplog: pytest.LogCaptureFixture
) -> None:
    good, _ = random_blocks("q4_1", 8, 64, seed=8)
    bad, _ = random_blocks("q4_1", 8, 64, seed=9)
    model = nn.Module()
    model.register_parameter("good", nn.Parameter(kernel.dequantize(good), requires_grad=False))
    model.register_parameter("bad", nn.Parameter(kernel.dequantize(good), requires_grad=False))
    wide, _ = random_blocks("q4_1", 8, 96, seed=10)
    kept = verified_blocks(
        kernel, model, {"good": good, "bad": bad, "missing": good, "good2": wide}
    )
    assert list(kept) == ["good"]
    assert "differ from the loaded weight" in caplog.text


def test_a_damaged_gguf_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 20)
    with pytest.raises(ValueError, match="unreadable GGUF header"):
        read_llama_blocks(str(path), 1, 4, 2)
    path.write_bytes(b"NOPE" * 10)
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_llama_blocks(str(path), 1, 4, 2)
