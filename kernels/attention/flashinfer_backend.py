"""FlashInfer paged attention (GPU): the same layout the torch reference reads, run by FlashInfer.

A batch of decodes only (every extend_len == 1) runs the batch-decode kernel; anything with a
prefill chunk runs the batch-prefill kernel, whose causal mask aligns each request's queries to
the end of its KV (query i sits at position seq_len - extend_len + i), exactly our convention.
Plans are built once per forward pass, lazily at the first layer, because the softmax scale comes
with the layer; every later layer reuses the plan.
"""

from __future__ import annotations

import torch

from .base import AttentionBackend, AttentionShape, PagedBatchLayout

WORKSPACE_BYTES = 256 * 1024 * 1024


class FlashInferAttentionBackend(AttentionBackend):
    def __init__(self, shape: AttentionShape) -> None:
        super().__init__(shape)
        import flashinfer  # imported here: the CPU build never has it

        if shape.device.type != "cuda":
            raise ValueError("the flashinfer attention backend needs a CUDA device")
        self.workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=shape.device)
        self.prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        self.decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            self.workspace, "NHD", use_tensor_cores=shape.num_heads // shape.num_kv_heads >= 4
        )
        self._layout: PagedBatchLayout | None = None
        self._planned_scale: float | None = None
        self._is_decode = False

    def plan(self, layout: PagedBatchLayout) -> None:
        self._layout = layout
        self._planned_scale = None
        self._is_decode = all(n == 1 for n in layout.extend_lens_cpu)

    def _plan_now(self, scaling: float, q_dtype: torch.dtype, kv_dtype: torch.dtype) -> None:
        layout = self._layout
        assert layout is not None, "plan() must run before forward()"
        s = self.shape
        # Host indptrs: FlashInfer plans on the host and would otherwise copy them back (a sync).
        kv_indptr = layout.host_or_device("kv_indptr")
        last_page_len = layout.host_or_device("kv_last_page_len")
        if self._is_decode:
            self.decode.plan(
                kv_indptr,
                layout.kv_page_indices,
                last_page_len,
                s.num_heads,
                s.num_kv_heads,
                s.head_dim,
                layout.page_size,
                q_data_type=q_dtype,
                kv_data_type=kv_dtype,
                sm_scale=scaling,
            )
        else:
            self.prefill.plan(
                layout.host_or_device("qo_indptr"),
                kv_indptr,
                layout.kv_page_indices,
                last_page_len,
                s.num_heads,
                s.num_kv_heads,
                s.head_dim,
                layout.page_size,
                causal=True,
                sm_scale=scaling,
                q_data_type=q_dtype,
                kv_data_type=kv_dtype,
            )
        self._planned_scale = scaling

    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        if self._planned_scale != scaling:
            self._plan_now(scaling, q.dtype, k_cache.dtype)
        wrapper = self.decode if self._is_decode else self.prefill
        out = wrapper.run(q.contiguous(), (k_cache, v_cache))
        return out.reshape(q.shape[0], -1)
