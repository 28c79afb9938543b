"""The paged KV pool: per layer, K and V buffers indexed by page.

Layout per layer is FlashInfer's NHD paged layout, [num_pages + 1, page_size, num_kv_heads,
head_dim]. Page ids 0..num_pages-1 belong to the prefix cache's allocator; the extra last page is
scratch that padded rows (CUDA-graph batches) may write without touching anyone's KV.

    slot = page * page_size + offset_in_page      (a token's row in the flattened buffer)
"""

from __future__ import annotations

import torch


class KVPool:
    def __init__(
        self,
        num_pages: int,
        page_size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        if num_pages < 1 or page_size < 1:
            raise ValueError(
                f"KV pool needs num_pages >= 1 and page_size >= 1, got {num_pages}, {page_size}"
            )
        self.num_pages = num_pages
        self.page_size = page_size
        self.scratch_page = num_pages
        shape = (num_pages + 1, page_size, num_kv_heads, head_dim)
        self.k_buffers = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_buffers = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @property
    def num_tokens(self) -> int:
        return self.num_pages * self.page_size

    def store(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Writes new tokens' K/V ([T, Hkv, D]) at flat slots [T]."""
        k_flat = self.k_buffers[layer_id].view(-1, *k.shape[1:])
        v_flat = self.v_buffers[layer_id].view(-1, *v.shape[1:])
        k_flat[slots] = k.to(k_flat.dtype)
        v_flat[slots] = v.to(v_flat.dtype)

    def layer(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_buffers[layer_id], self.v_buffers[layer_id]

    def copy_pages(self, src: list[int], dst: list[int]) -> None:
        """Copies whole pages (used when a shuffled or compacted page table is wanted)."""
        src_t = torch.tensor(src, dtype=torch.long, device=self.k_buffers[0].device)
        dst_t = torch.tensor(dst, dtype=torch.long, device=self.k_buffers[0].device)
        for k_buf, v_buf in zip(self.k_buffers, self.v_buffers, strict=True):
            k_buf[dst_t] = k_buf[src_t]
            v_buf[dst_t] = v_buf[src_t]
