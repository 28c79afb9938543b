"""The paged KV pool: per layer, K and V buffers indexed by page.

Layout per layer is FlashInfer's NHD paged layout, [num_pages + 1, page_size, num_kv_heads,
head_dim]. Page ids 0..num_pages-1 belong to the prefix cache's allocator; the extra last page is
scratch that padded rows (CUDA-graph batches) may write without touching anyone's KV.

    slot = page * page_size + offset_in_page      (a token's row in the flattened buffer)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
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
        # index_copy_ rather than `k_flat[slots] = k`: the same copy without the advanced-
        # indexing dispatch (4 us against 7 for a 16-row CPU decode step, twice per layer).
        k_flat.index_copy_(0, slots, k.to(k_flat.dtype))
        v_flat.index_copy_(0, slots, v.to(v_flat.dtype))

    def layer(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_buffers[layer_id], self.v_buffers[layer_id]

    def copy_pages(self, src: list[int], dst: list[int]) -> None:
        """Copies whole pages (used when a shuffled or compacted page table is wanted)."""
        src_t = torch.tensor(src, dtype=torch.long, device=self.k_buffers[0].device)
        dst_t = torch.tensor(dst, dtype=torch.long, device=self.k_buffers[0].device)
        for k_buf, v_buf in zip(self.k_buffers, self.v_buffers, strict=True):
            k_buf[dst_t] = k_buf[src_t]
            v_buf[dst_t] = v_buf[src_t]


def contiguous_runs(pages: np.ndarray) -> list[tuple[int, int]]:
    """`[(i, j), ...]`: the positions of `pages` split where the next id is not one more, so
    `pages[i:j]` is the id range `pages[i] .. pages[i] + (j - i) - 1`."""
    if len(pages) == 0:
        return []
    breaks = np.flatnonzero(np.diff(pages) != 1) + 1
    edges = [0, *breaks.tolist(), len(pages)]
    return list(zip(edges[:-1], edges[1:], strict=True))


class HostKVPool:
    """The host tier's KV (the hierarchical cache's `KVMover`): K and V of `num_pages` host
    pages, page-first, [num_pages, num_layers, page_size, heads, head_dim] each, so a run of
    consecutive host pages (the allocator hands them out in runs) is one contiguous block.

    On the CPU the device pool is host memory too, and both copies run synchronously. On a GPU
    the host tensors are page-locked (registered with CUDA in place: the caching host allocator
    would round a tier of tens of GiB up to a power of two), and every copy is a DMA of whole
    runs on a side stream, in stream order, which alone orders a load after the write-back of
    the same host page; no host-side gather or scatter, nothing on the scheduler's thread but
    the launches:

        write_back  the side stream waits for the compute stream (the KV is computed), gathers
                    the device pages into one device buffer and records an event the compute
                    stream waits for, so a later step may overwrite the freed pages only after
                    the gather read them; then one device-to-host copy per run.
        load_back   one host-to-device copy per run into a device buffer, scattered into the
                    device pages; the returned transfer is done when its event has fired. The
                    cache keeps those pages out of every batch until then.
    """

    def __init__(self, device_pool: KVPool, num_pages: int) -> None:
        if num_pages < 1:
            raise ValueError(f"the host KV tier needs at least one page, got {num_pages}")
        self.device_pool = device_pool
        self.num_pages = num_pages
        first = device_pool.k_buffers[0]
        self.device = first.device
        self.cuda = self.device.type == "cuda"
        shape = (num_pages, len(device_pool.k_buffers), *first.shape[1:])
        # empty, not zeros: a host page is always written before it is read, and zeroing tens of
        # GiB would cost seconds of start-up.
        self.k = torch.empty(shape, dtype=first.dtype)
        self.v = torch.empty(shape, dtype=first.dtype)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        # (event, buffers): copies in flight and what they read or write, kept referenced until
        # their event fired, so neither allocator hands that memory out while a copy uses it.
        self._in_flight: list[tuple[Any, tuple[Any, ...]]] = []
        if self.cuda:
            _register_pinned(self, self.k, self.v)

    @staticmethod
    def pages_for_bytes(device_pool: KVPool, num_bytes: float) -> int:
        first = device_pool.k_buffers[0]
        per_page = 2 * len(device_pool.k_buffers) * first[0].numel() * first.element_size()
        return int(num_bytes // per_page)

    def write_back(self, device_pages: Sequence[int], host_pages: Sequence[int]) -> None:
        if not device_pages:
            return
        pool = self.device_pool
        host = np.asarray(host_pages, dtype=np.int64)
        if not self.cuda:
            dev_idx = torch.as_tensor(np.asarray(device_pages, dtype=np.int64))
            host_idx = torch.from_numpy(host)
            self.k[host_idx] = torch.stack([buf[dev_idx] for buf in pool.k_buffers], dim=1)
            self.v[host_idx] = torch.stack([buf[dev_idx] for buf in pool.v_buffers], dim=1)
            return
        assert self.stream is not None
        self._forget_finished()
        compute = torch.cuda.current_stream(self.device)
        dev_idx_host = torch.tensor(list(device_pages), dtype=torch.long, pin_memory=True)
        self.stream.wait_stream(compute)  # the KV to copy is computed by work queued before
        with torch.cuda.stream(self.stream):
            dev_idx = dev_idx_host.to(self.device, non_blocking=True)
            k = torch.stack([buf[dev_idx] for buf in pool.k_buffers], dim=1)
            v = torch.stack([buf[dev_idx] for buf in pool.v_buffers], dim=1)
            gathered = torch.cuda.Event()
            gathered.record(self.stream)
            for i, j in contiguous_runs(host):
                first = int(host[i])
                self.k[first : first + j - i].copy_(k[i:j], non_blocking=True)
                self.v[first : first + j - i].copy_(v[i:j], non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.stream)
        # The freed pages may be overwritten once the gather has read them (not the whole copy).
        compute.wait_event(gathered)
        self._in_flight.append((copied, (k, v, dev_idx, dev_idx_host)))

    def _forget_finished(self) -> None:
        """Drops the buffers of the copies that finished (in stream order: stop at the first
        that has not)."""
        done = 0
        for event, _ in self._in_flight:
            if not event.query():
                break
            done += 1
        del self._in_flight[:done]

    def load_back(self, host_pages: Sequence[int], device_pages: Sequence[int]) -> Transfer:
        pool = self.device_pool
        host = np.asarray(host_pages, dtype=np.int64)
        if not self.cuda:
            dev_idx = torch.as_tensor(np.asarray(device_pages, dtype=np.int64))
            host_idx = torch.from_numpy(host)
            k, v = self.k[host_idx], self.v[host_idx]
            for layer, (k_buf, v_buf) in enumerate(
                zip(pool.k_buffers, pool.v_buffers, strict=True)
            ):
                k_buf[dev_idx] = k[:, layer]
                v_buf[dev_idx] = v[:, layer]
            return DONE
        assert self.stream is not None
        self._forget_finished()
        dev_idx_host = torch.tensor(list(device_pages), dtype=torch.long, pin_memory=True)
        compute = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(compute)  # the pages were just freed by work already queued
        with torch.cuda.stream(self.stream):
            dev_idx = dev_idx_host.to(self.device, non_blocking=True)
            k = torch.empty((len(host), *self.k.shape[1:]), dtype=self.k.dtype, device=self.device)
            v = torch.empty_like(k)
            for i, j in contiguous_runs(host):
                first = int(host[i])
                k[i:j].copy_(self.k[first : first + j - i], non_blocking=True)
                v[i:j].copy_(self.v[first : first + j - i], non_blocking=True)
            for layer, (k_buf, v_buf) in enumerate(
                zip(pool.k_buffers, pool.v_buffers, strict=True)
            ):
                k_buf[dev_idx] = k[:, layer]
                v_buf[dev_idx] = v[:, layer]
            event = torch.cuda.Event()
            event.record(self.stream)
        buffers = (dev_idx_host, k, v, dev_idx)
        self._in_flight.append((event, buffers))
        return CudaTransfer(event, buffers)


def _cudart() -> Any:
    cudart = torch.cuda.cudart()
    if cudart is None:
        raise RuntimeError("this torch build has no CUDA runtime to page-lock host memory with")
    return cudart


def _register_pinned(owner: object, *tensors: torch.Tensor) -> None:
    """Page-locks the tensors' memory in place until `owner` is collected (the finalizer keeps
    the tensors alive until it has unregistered them)."""
    cudart = _cudart()
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        err = int(cudart.cudaHostRegister(tensor.data_ptr(), nbytes, 0))
        if err != 0:
            raise RuntimeError(
                f"could not page-lock {nbytes / 2**30:.1f} GiB of host memory for the host KV "
                f"tier (cudaError {err}); lower --hicache-size or --hicache-ratio"
            )
    weakref.finalize(owner, _unregister_pinned, *tensors)


def _unregister_pinned(*tensors: torch.Tensor) -> None:
    cudart = _cudart()
    for tensor in tensors:
        cudart.cudaHostUnregister(tensor.data_ptr())


class CudaTransfer:
    """A load-back on the side stream: done once its event has fired. The buffers it reads
    and writes stay referenced until then."""

    __slots__ = ("event", "_keep_alive")

    def __init__(self, event: Any, keep_alive: tuple[Any, ...]) -> None:
        self.event = event
        self._keep_alive: tuple[Any, ...] | None = keep_alive

    def done(self) -> bool:
        if self._keep_alive is None:
            return True
        if not self.event.query():
            return False
        self._keep_alive = None
        return True

    def wait(self) -> None:
        self.event.synchronize()
        self.done()
