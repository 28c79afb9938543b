"""The paged KV pool: per layer, K and V buffers indexed by page.

Layout per layer is FlashInfer's NHD paged layout, [num_pages + 1, page_size, num_kv_heads,
head_dim]. Page ids 0..num_pages-1 belong to the prefix cache's allocator; the extra last page is
scratch that padded rows (CUDA-graph batches) may write without touching anyone's KV.

    slot = page * page_size + offset_in_page      (a token's row in the flattened buffer)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...radix_cache.host_tier import DONE, Transfer


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


class HostKVPool:
    """The host tier's KV (the hierarchical cache's `KVMover`): K and V of `num_pages` host
    pages, all layers in one tensor each, [num_layers, num_pages, page_size, heads, head_dim].

    On the CPU the device pool is host memory too, and both copies run synchronously. On a GPU
    the copies go through pinned staging tensors and run on a side stream, in its order:

        write_back  side stream waits for the compute stream (the KV is computed); gathers the
                    device pages into a device buffer, copies it to a pinned staging tensor,
                    records an event; the compute stream waits for that event, so a later step
                    may overwrite the freed pages only after the gather read them. The staging
                    tensor is scattered into the host pool on the host once the event has fired
                    (`_land_writes`, before any load reads the host pool).
        load_back   gathers the host pages into a pinned staging tensor on the host, copies it
                    to the device on the side stream and scatters it into the device pages
                    there; the returned transfer is done when its event has fired. The cache
                    keeps those pages out of every batch until then.
    """

    def __init__(self, device_pool: KVPool, num_pages: int) -> None:
        if num_pages < 1:
            raise ValueError(f"the host KV tier needs at least one page, got {num_pages}")
        self.device_pool = device_pool
        self.num_pages = num_pages
        first = device_pool.k_buffers[0]
        self.device = first.device
        self.cuda = self.device.type == "cuda"
        shape = (len(device_pool.k_buffers), num_pages, *first.shape[1:])
        # Plain host memory: on a GPU every copy goes through a pinned staging tensor (the
        # device never reads these), so pinning the whole tier would only slow the start-up.
        self.k = torch.zeros(shape, dtype=first.dtype)
        self.v = torch.zeros(shape, dtype=first.dtype)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._writes: list[_PendingWrite] = []

    @staticmethod
    def pages_for_bytes(device_pool: KVPool, num_bytes: float) -> int:
        first = device_pool.k_buffers[0]
        per_page = 2 * len(device_pool.k_buffers) * first[0].numel() * first.element_size()
        return int(num_bytes // per_page)

    def write_back(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        if not device_pages:
            return
        pool = self.device_pool
        host_idx = torch.tensor(list(host_pages), dtype=torch.long)
        if not self.cuda:
            dev_idx = torch.tensor(list(device_pages), dtype=torch.long, device=self.device)
            for layer, (k_buf, v_buf) in enumerate(
                zip(pool.k_buffers, pool.v_buffers, strict=True)
            ):
                self.k[layer, host_idx] = k_buf[dev_idx]
                self.v[layer, host_idx] = v_buf[dev_idx]
            return
        assert self.stream is not None
        self._land_writes(wait=False)  # keeps the staging tensors of finished writes few
        compute = torch.cuda.current_stream(self.device)
        dev_idx_host = torch.tensor(list(device_pages), dtype=torch.long, pin_memory=True)
        self.stream.wait_stream(compute)  # the KV to copy is computed by work queued before
        with torch.cuda.stream(self.stream):
            dev_idx = dev_idx_host.to(self.device, non_blocking=True)
            k = torch.stack([buf[dev_idx] for buf in pool.k_buffers])
            v = torch.stack([buf[dev_idx] for buf in pool.v_buffers])
            gathered = torch.cuda.Event()
            gathered.record(self.stream)
            k_staging = torch.empty(k.shape, dtype=k.dtype, pin_memory=True)
            v_staging = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
            k_staging.copy_(k, non_blocking=True)
            v_staging.copy_(v, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.stream)
        # The freed pages may be overwritten once the gather has read them (not the whole copy).
        compute.wait_event(gathered)
        # k, v and both indices stay referenced until the copy's event fired, so the caching
        # allocators do not hand their memory out while the side stream still uses it.
        keep_alive = (k, v, dev_idx, dev_idx_host)
        self._writes.append(_PendingWrite(copied, host_idx, k_staging, v_staging, keep_alive))

    def _land_writes(self, wait: bool) -> None:
        """Scatters finished write-backs into the host pool (all of them, waiting, if `wait`)."""
        landed = 0
        for write in self._writes:  # in stream order: a later copy is never done before
            if wait:
                write.event.synchronize()
            elif not write.event.query():
                break
            self.k[:, write.host_idx] = write.k
            self.v[:, write.host_idx] = write.v
            landed += 1
        del self._writes[:landed]

    def _land_writes_for(self, host_pages: Sequence[int]) -> None:
        """Lands the pending write-backs up to the last one into any of `host_pages` (waiting
        for it: under overlap scheduling that means the step in flight), the rest only if done."""
        wanted = set(host_pages)
        last = -1
        for index, write in enumerate(self._writes):
            if not wanted.isdisjoint(write.host_idx.tolist()):
                last = index
        if last >= 0:
            self._writes[last].event.synchronize()  # stream order: every earlier one is done too
        self._land_writes(wait=False)

    def load_back(self, host_pages: Sequence[int], device_pages: Sequence[int]) -> Transfer:
        pool = self.device_pool
        host_idx = torch.tensor(list(host_pages), dtype=torch.long)
        if not self.cuda:
            dev_idx = torch.tensor(list(device_pages), dtype=torch.long, device=self.device)
            for layer, (k_buf, v_buf) in enumerate(
                zip(pool.k_buffers, pool.v_buffers, strict=True)
            ):
                k_buf[dev_idx] = self.k[layer, host_idx]
                v_buf[dev_idx] = self.v[layer, host_idx]
            return DONE
        assert self.stream is not None
        self._land_writes_for(host_pages)  # a page written back just now may be loaded now
        shape = (self.k.shape[0], len(host_idx), *self.k.shape[2:])
        k_staging = torch.empty(shape, dtype=self.k.dtype, pin_memory=True)
        v_staging = torch.empty(shape, dtype=self.v.dtype, pin_memory=True)
        torch.index_select(self.k, 1, host_idx, out=k_staging)  # a host-side gather
        torch.index_select(self.v, 1, host_idx, out=v_staging)
        dev_idx_host = torch.tensor(list(device_pages), dtype=torch.long, pin_memory=True)
        compute = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(compute)  # the pages were just freed by work already queued
        with torch.cuda.stream(self.stream):
            dev_idx = dev_idx_host.to(self.device, non_blocking=True)
            k = k_staging.to(self.device, non_blocking=True)
            v = v_staging.to(self.device, non_blocking=True)
            for layer, (k_buf, v_buf) in enumerate(
                zip(pool.k_buffers, pool.v_buffers, strict=True)
            ):
                k_buf[dev_idx] = k[layer]
                v_buf[dev_idx] = v[layer]
            event = torch.cuda.Event()
            event.record(self.stream)
        return CudaTransfer(event, (k_staging, v_staging, dev_idx_host, k, v, dev_idx), self)


@dataclass(slots=True)
class _PendingWrite:
    event: Any
    host_idx: torch.Tensor
    k: torch.Tensor  # pinned staging, [layers, pages, page_size, heads, head_dim]
    v: torch.Tensor
    keep_alive: tuple[Any, ...]


class CudaTransfer:
    """A load-back on the side stream: done once its event has fired. The buffers it reads
    and writes stay referenced until then."""

    __slots__ = ("event", "_keep_alive", "_pool")

    def __init__(self, event: Any, keep_alive: tuple[Any, ...], pool: HostKVPool) -> None:
        self.event = event
        self._keep_alive: tuple[Any, ...] | None = keep_alive
        self._pool = pool

    def done(self) -> bool:
        if self._keep_alive is None:
            return True
        if not self.event.query():
            return False
        self._keep_alive = None
        self._pool._land_writes(wait=False)  # a chance to land finished write-backs too
        return True

    def wait(self) -> None:
        self.event.synchronize()
        self.done()
