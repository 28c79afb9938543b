r"""The hierarchical radix cache: a host-memory tier under the device pool (SGLang's HiCache).

Each node's KV lives on the device (`pages`), on the host (`host_pages`), or on both:

    root --[A | dev p3 p4 | host -]--> --[B | dev p7 | host h2]--> --[C | dev - | host h5 h6]
          device only                   both                        host only

Device residency is closed under prefixes (a node on the device has its whole path on the
device), so a match is a run of device nodes followed by a run of host nodes. Evicting a device
leaf (no child on the device) keeps its KV: with `write_back` (the default policy) its pages are
copied to host pages first (unless it has a host copy already) and the node stays, on the host
only. The host tier has its own LRU heap and drops its oldest copies when full: a node on both
tiers just loses its host copy, a host-only leaf leaves the tree. A device leaf that finds no
host room leaves the tree with its host-only subtree. `write_through` also copies every new leaf
to the host at insert, so a later eviction costs no copy.

Load-back (`load_back(match)`): the host run of a match gets device pages and a copy starts;
its nodes stay out of device matches (`loading`) until `poll_loads` sees the copy done. A load
holds a lock of its own on the path, so an abort meanwhile (the caller unlocks) returns every
page only once the copy has finished. One lock count per node pins both tiers.

The copies themselves are a `KVMover`'s (host_tier.py); this module only keeps the books.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

from .allocator import PageAllocator
from .base import CacheStats, InsertResult, MatchResult, Recount
from .eviction import EvictionPolicy, TierHeap
from .hicache_check import check_host_tier, recount_tiers
from .hicache_load import LoadTicket, finish_loads, start_load
from .host_tier import KVMover, NoCopy
from .inspection import iter_nodes
from .node import TreeNode, aligned_common_prefix, as_token_list, child_key
from .page_flags import PageIds, as_ids, is_bulk
from .radix_cache import RadixCache

WRITE_POLICIES = ("write_back", "write_through")


class HierarchicalRadixCache(RadixCache):
    kind: ClassVar[str] = "hiradix"

    def __init__(
        self,
        num_pages: int,
        page_size: int = 1,
        policy: str | EvictionPolicy = "lru",
        *,
        host_pages: int,
        mover: KVMover | None = None,
        write_policy: str = "write_back",
    ) -> None:
        if write_policy not in WRITE_POLICIES:
            raise ValueError(f"unknown write policy {write_policy!r}; use one of {WRITE_POLICIES}")
        super().__init__(num_pages, page_size, policy)
        self.host = PageAllocator(host_pages, "host tier")
        self.mover: KVMover = mover if mover is not None else NoCopy()
        self.write_policy = write_policy
        self._heap = TierHeap(self.policy, self._device_evictable)
        self._host_heap = TierHeap(self.policy, self._host_evictable)
        self._host_cached = self._host_locked = 0
        self._loads: list[LoadTicket] = []
        self._keep_evicted = True  # False while flushing: evicted KV is dropped, not copied
        # While `evict` runs: the write-backs its leaves need, issued as one copy at its end
        # (one gather and one set of launches for the call instead of one per leaf).
        self._evict_writes: tuple[list[int], list[int]] | None = None
        self.host_hit_tokens = self.load_back_tokens = self.write_back_tokens = 0
        self.host_evicted_pages = 0
        self.load_back_seconds = 0.0

    # --- evictability --------------------------------------------------------------------------

    @staticmethod
    def _device_evictable(node: TreeNode) -> bool:
        return (
            node.lock_ref == 0
            and node.parent is not None
            and bool(node.pages)
            and node.loading is None
            and not any(child.pages for child in node.children.values())
        )

    @staticmethod
    def _host_evictable(node: TreeNode) -> bool:
        return (
            node.lock_ref == 0
            and node.parent is not None
            and node.host_pages is not None
            and node.loading is None
            and (bool(node.pages) or not node.children)
        )

    def _push(self, node: TreeNode) -> None:
        self._heap.push(node, self.num_nodes)
        self._host_heap.push(node, self.num_nodes)

    # --- lookups -------------------------------------------------------------------------------

    def _walk(
        self, tokens: list[int], end: int, now: int, count_hit: bool
    ) -> tuple[TreeNode, int, list[int]]:
        """As the radix cache's, but walks on through host (and loading) nodes: returns the
        device part and leaves the host part in `_host_part` (node, tokens)."""
        ps = self.page_size
        node, pos, pages = self.root, 0, []
        device_node, device_pos, on_device = node, 0, True
        while pos < end:
            child = node.children.get(tokens[pos] if ps == 1 else tuple(tokens[pos : pos + ps]))
            if child is None:
                break
            length = aligned_common_prefix(child.key, tokens, pos, end, ps)
            partial = length < len(child.key)
            if partial:
                child = self._split(child, length)
            child.last_access = now
            if count_hit:
                child.hits += 1
            self._push(child)
            pos += length
            node = child
            if on_device and child.pages and child.loading is None:
                pages += child.pages
                device_node, device_pos = child, pos
            else:
                on_device = False
            if partial:
                break
        self._host_part = (node, pos - device_pos) if pos > device_pos else (None, 0)
        return device_node, device_pos, pages

    def match_prefix(self, token_ids: Sequence[int]) -> MatchResult:
        result = super().match_prefix(token_ids)
        host_node, host_len = self._host_part
        if host_len:
            return dataclasses.replace(result, host_len=host_len, host_node=host_node)
        return result

    def _split(self, child: TreeNode, length: int) -> TreeNode:
        upper = super()._split(child, length)
        count = length // self.page_size
        if child.host_pages is not None:
            upper.host_pages, child.host_pages = child.host_pages[:count], child.host_pages[count:]
        if child.loading is not None:
            upper.loading = child.loading
            child.loading.nodes.append(upper)
        return upper

    # --- insert --------------------------------------------------------------------------------

    def insert(self, token_ids: Sequence[int], pages: Sequence[int]) -> InsertResult:
        """As the radix cache's; where the key runs through host-only nodes, the caller's pages
        become their device pages (the caller computed that KV again), and a load in flight on
        the path is waited for. With write_through a new leaf is copied to the host at once."""
        tokens = as_token_list(token_ids)
        self._check_insert_shape(len(tokens), len(pages))
        self._adopt(tokens, pages)
        result = super().insert(tokens, pages)
        leaf = result.node
        if self.write_policy == "write_through" and leaf.pages and leaf.host_pages is None:
            host = self._host_alloc(len(leaf.pages))
            if host is not None:
                self.mover.write_back(leaf.pages, host)
                self.write_back_tokens += len(host) * self.page_size
                self._set_host(leaf, host)
        return result

    def _adopt(self, tokens: list[int], pages: Sequence[int]) -> None:
        ps, end = self.page_size, len(tokens)
        node, pos, waited = self.root, 0, False
        adopt: list[tuple[TreeNode, int]] = []
        while pos < end:
            child = node.children.get(tokens[pos] if ps == 1 else tuple(tokens[pos : pos + ps]))
            if child is None:
                break
            length = aligned_common_prefix(child.key, tokens, pos, end, ps)
            if length < len(child.key):
                child = self._split(child, length)
            if child.loading is not None:
                if child.loading.transfer is not None:
                    child.loading.transfer.wait()
                waited = True
            elif not child.pages:
                adopt.append((child, pos // ps))
            pos += length
            node = child
        if waited:
            self.poll_loads()
        if not adopt:
            return
        slices = [list(pages[start : start + len(n.host_pages or ())]) for n, start in adopt]
        self._check_handed_over([p for s in slices for p in s])
        for (target, _), mine in zip(adopt, slices, strict=True):
            self._set_device(target, mine)

    # --- page assignment (keeps the counters exact) ---------------------------------------------

    def _set_device(self, node: TreeNode, pages: list[int]) -> None:
        array = as_ids(pages) if is_bulk(pages) else None
        self._own(pages if array is None else array)
        node.pages, node.page_array = pages, array
        if node.lock_ref > 0:
            self._locked_pages += len(pages)
        self._push(node)
        if node.parent is not None:
            self._push(node.parent)  # no longer a device leaf

    def _set_host(self, node: TreeNode, host: list[int]) -> None:
        self.host.take(host, "write-back")
        node.host_pages = host
        self._host_cached += len(host)
        if node.lock_ref > 0:
            self._host_locked += len(host)
        self._push(node)

    # --- locks ---------------------------------------------------------------------------------

    def _count_locked(self, node: TreeNode, sign: int) -> None:
        super()._count_locked(node, sign)
        self._host_locked += sign * len(node.host_pages or ())

    # --- eviction ------------------------------------------------------------------------------

    def evict(self, num_pages: int) -> int:
        # The copies are issued before this returns, so before any device work that could reuse
        # the freed pages is enqueued: the mover's ordering contract holds for the whole batch.
        self._evict_writes = ([], [])
        try:
            return super().evict(num_pages)
        finally:
            device, host = self._evict_writes
            self._evict_writes = None
            if device:
                self.mover.write_back(device, host)

    def _evict_next(self) -> PageIds:
        node = self._heap.pop()
        if node is None:
            return []
        pages = node.pages if node.page_array is None else node.page_array
        if node.host_pages is None and self._keep_evicted:
            host = self._host_alloc(len(node.pages))
            if host is not None:
                if self._evict_writes is None:
                    self.mover.write_back(node.pages, host)
                else:  # a host page dropped and reused within the batch: the later copy lands last
                    self._evict_writes[0].extend(node.pages)
                    self._evict_writes[1].extend(host)
                self.write_back_tokens += len(host) * self.page_size
                self._set_host(node, host)
        parent = node.parent
        assert parent is not None
        if node.host_pages is not None:
            node.pages, node.page_array = [], None  # unlocked: no locked count to adjust
        else:
            self._delete(node)
        self._push(parent)
        if node.parent is not None:
            self._push(node)
        return pages

    def _delete(self, node: TreeNode) -> None:
        """Takes `node` (its device pages already accounted by the caller) and its host-only
        subtree out of the tree, releasing their host pages."""
        parent = node.parent
        assert parent is not None
        del parent.children[child_key(node.key, 0, self.page_size)]
        stack = [node]
        while stack:
            gone = stack.pop()
            stack.extend(gone.children.values())
            if gone.host_pages is not None:
                self._release_host(gone)
            gone.parent = None
            self.num_nodes -= 1

    def _release_host(self, node: TreeNode) -> None:
        host = node.host_pages or []
        node.host_pages = None
        self.host.release(host)
        self._host_cached -= len(host)

    def _host_alloc(self, n: int) -> list[int] | None:
        """`n` host pages, dropping the host tier's oldest copies if needed; None if even that
        is not enough (some copies may have been dropped then)."""
        if n > self.host.num_pages:
            return None
        while self.host.num_free < n:
            node = self._host_heap.pop()
            if node is None:
                return None
            self._drop_host_copy(node)
        return self.host.alloc(n)

    def _drop_host_copy(self, node: TreeNode) -> None:
        """Frees an unlocked host leaf's host pages; a node left on neither tier leaves the tree,
        and its parent may become a leaf of either heap."""
        self.host_evicted_pages += len(node.host_pages or ())
        self._release_host(node)
        parent = node.parent
        assert parent is not None
        if not node.pages:
            del parent.children[child_key(node.key, 0, self.page_size)]
            node.parent = None
            self.num_nodes -= 1
        self._push(parent)

    def flush(self) -> int:
        """Empties both tiers of everything unlocked (waiting for loads in flight first);
        returns the device pages freed."""
        for ticket in self._loads:
            if ticket.transfer is not None:
                ticket.transfer.wait()
        self.poll_loads()
        self._keep_evicted = False
        try:
            freed = self.evict(self.num_evictable_pages)
        finally:
            self._keep_evicted = True
        while (node := self._host_heap.pop()) is not None:
            self._drop_host_copy(node)
        return freed

    # --- load-back -----------------------------------------------------------------------------

    def load_back(self, match: MatchResult) -> LoadTicket | None:
        """Starts bringing `match`'s host part to the device; None when there is none or the
        device has no room for it now. The caller holds a lock on `ticket.node` until it
        unlocks it (after re-matching once `ticket.done()`, or on abort). See hicache_load.py."""
        return start_load(self, match)

    def poll_loads(self) -> int:
        """Finishes the loads whose copies are done (their nodes join device matches, their
        locks go); returns how many are still in flight."""
        return finish_loads(self)

    # --- accounting ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The radix cache's view plus "write_policy", and per node its "tier" ("device",
        "host" or "both"), "host_pages" and whether a load-back is filling it ("loading")."""
        view = super().to_dict()
        nodes = {node.node_id: node for node in iter_nodes(self.root)}
        for entry in view["nodes"]:
            node = nodes.get(entry["id"])
            if node is None:  # the root
                continue
            on_host = node.host_pages is not None
            entry["tier"] = ("both" if on_host else "device") if node.pages else "host"
            entry["host_pages"] = list(node.host_pages or ())
            entry["loading"] = node.loading is not None
        view["write_policy"] = self.write_policy
        return view

    @property
    def num_host_cached_pages(self) -> int:
        return self._host_cached

    def stats(self) -> CacheStats:
        ps = self.page_size
        return dataclasses.replace(
            super().stats(),
            host_pages=self.host.num_pages,
            host_free_pages=self.host.num_free,
            host_cached_tokens=self._host_cached * ps,
            host_hit_tokens=self.host_hit_tokens,
            load_back_tokens=self.load_back_tokens,
            load_back_seconds=self.load_back_seconds,
            write_back_tokens=self.write_back_tokens,
            host_evicted_pages=self.host_evicted_pages,
        )

    def _recount(self) -> Recount:
        return recount_tiers(self)

    def check_integrity(self, held_pages: Any = None) -> None:
        """The radix cache's check with the tiers' rules (see hicache_check.py), then the host
        pool's own partition: every host page free or cached by exactly one node."""
        super().check_integrity(held_pages)
        check_host_tier(self)
