"""The FlashInfer backend's float workspace is sized from the shape, the largest CUDA-graph
batch and the GPU's SM count (no FlashInfer or GPU needed to check the arithmetic).

Issue 11: `cuda_graph_max_bs=512` on the Llama-3.1-8B shape failed at start-up with FlashInfer's
"Buffer overflow when allocating memory for batch_prefill_tmp_v ... only 134217728 bytes
available": the graphs' workspace was a 128 MiB literal, while a 512-row graph plan asks for
32 heads x (ceil(512 * 4 / 16) + 511 = 639 tiles) x 16 rows x 128 dims of float32.
"""

from __future__ import annotations

import torch

from radixserve.kernels.attention.base import AttentionShape
from radixserve.kernels.attention.flashinfer_backend import (
    cta_tile_q,
    float_workspace_bytes,
    split_kv_rows,
    uses_tensor_cores,
)

H200_SMS = 132
CPU = torch.device("cpu")
LLAMA_8B = AttentionShape(32, 8, 128, 16, torch.bfloat16, CPU)
TINY = AttentionShape(4, 2, 128, 16, torch.bfloat16, CPU)  # the GPU tests' tiny models
OLD_LITERAL = 128 * 2**20


def planner_tmp_bytes(shape: AttentionShape, padded_batch: int, tile: int) -> int:
    """tmp_v + tmp_s as FlashInfer's prefill planner allocates them for a padded batch."""
    rows = padded_batch * tile
    return shape.num_heads * rows * shape.head_dim * 4 + shape.num_heads * rows * 4


def test_the_512_row_graphs_of_the_8b_shape_get_the_workspace_they_ask_for() -> None:
    assert uses_tensor_cores(LLAMA_8B) and cta_tile_q(4, 128) == 16
    asked = planner_tmp_bytes(LLAMA_8B, padded_batch=639, tile=16)
    assert asked > OLD_LITERAL  # the defect
    assert float_workspace_bytes(LLAMA_8B, H200_SMS, graph_bs=512) >= asked
    # Up to 256 rows (the default largest graph) the old literal was enough, and still is.
    assert planner_tmp_bytes(LLAMA_8B, 64 + 255, 16) <= OLD_LITERAL
    assert float_workspace_bytes(LLAMA_8B, H200_SMS, graph_bs=256) <= 2 * OLD_LITERAL


def test_graph_workspace_grows_with_the_batch_and_covers_each_size() -> None:
    for shape in (LLAMA_8B, TINY, AttentionShape(28, 4, 128, 16, torch.bfloat16, CPU)):
        sizes = [float_workspace_bytes(shape, H200_SMS, graph_bs=bs) for bs in range(1, 1025)]
        assert sizes == sorted(sizes)
        group = shape.num_heads // shape.num_kv_heads
        for bs in (1, 7, 100, 512, 1024):
            needed = float_workspace_bytes(shape, H200_SMS, graph_bs=bs)
            if uses_tensor_cores(shape):
                tile = cta_tile_q(group, shape.head_dim)
                grid = 2 * H200_SMS // shape.num_kv_heads
                padded = max(grid, -(-bs * group // tile) + bs - 1)
                assert needed >= planner_tmp_bytes(shape, padded, tile)
            else:  # the plain decode kernel: one row per (request, KV chunk)
                padded = max(32 * H200_SMS // shape.num_kv_heads, bs)
                assert needed >= shape.num_heads * padded * (shape.head_dim + 1) * 4


def test_eager_workspace_covers_the_largest_split_prefill() -> None:
    # Eager plans split KV only while the split batch fits the grid; tiles are at most 128 rows.
    for shape in (LLAMA_8B, TINY):
        grid = 2 * H200_SMS // shape.num_kv_heads
        assert split_kv_rows(shape, H200_SMS, None) >= grid * 128
        assert float_workspace_bytes(shape, H200_SMS) >= planner_tmp_bytes(shape, grid, 128)
    # ... and is no longer a flat 256 MiB where far less is needed.
    assert float_workspace_bytes(TINY, H200_SMS) < 64 * 2**20


def test_sizes_are_whole_mebibytes_and_follow_the_sm_count() -> None:
    small, large = (float_workspace_bytes(LLAMA_8B, sms, graph_bs=8) for sms in (16, 132))
    assert small % 2**20 == 0 and large % 2**20 == 0
    assert small < large  # a bigger GPU's split grid needs more partial outputs
