"""Load-back: bringing a match's host-resident KV back to the device (hicache.py's half that
runs across steps).

    start_load    lock the path (the load's own lock), give its host-only nodes device pages
                  (evicting elsewhere if needed), start one copy, mark those nodes `loading`
                  (out of device matches), lock the path again for the caller
    finish_loads  for every load whose copy is done: clear `loading`, drop the load's lock

A later load over a node still loading waits for that load too (`waits_for`), and an insert
through a loading node waits for its copy (hicache.insert).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import MatchResult
from .host_tier import Transfer
from .node import TreeNode

if TYPE_CHECKING:
    from .hicache import HierarchicalRadixCache


@dataclass(slots=True, eq=False)
class LoadTicket:
    """A load-back in flight: `node` ends the loaded path (the caller locks it), `nodes` are the
    nodes this load fills, `waits_for` earlier loads of the same path this one needs."""

    node: TreeNode
    nodes: list[TreeNode]
    transfer: Transfer | None
    tokens: int
    started: float
    waits_for: list[LoadTicket] = field(default_factory=list)
    finished: bool = False

    def copied(self) -> bool:
        return self.transfer is None or self.transfer.done()

    def done(self) -> bool:
        """The whole path is on the device: this copy and those it waits for are done."""
        return self.copied() and all(t.copied() for t in self.waits_for)


def start_load(cache: HierarchicalRadixCache, match: MatchResult) -> LoadTicket | None:
    """Starts bringing `match`'s host part to the device; None when there is none or the
    device has no room for it now. The caller holds a lock on `ticket.node` until it
    unlocks it (after re-matching once `ticket.done()`, or on abort)."""
    end = match.host_node
    if not match.host_len or end is None or end.parent is None:
        return None
    path: list[TreeNode] = []
    node = end
    while node is not match.node:
        if node is None or node is cache.root:
            return None  # the match is stale (split or evicted since)
        path.append(node)
        node = node.parent
    path.reverse()
    cache.lock(end)  # the load's own lock: pins both tiers of the path until the copy lands
    need = [n for n in path if n.loading is None and not n.pages]
    total = sum(len(n.host_pages or ()) for n in need)
    device = cache.alloc_pages(total)
    if device is None:
        cache.unlock(end)
        return None
    host: list[int] = []
    start = 0
    for n in need:
        count = len(n.host_pages or ())
        cache._set_device(n, device[start : start + count])
        host += n.host_pages or []
        start += count
    waits = list({id(n.loading): n.loading for n in path if n.loading is not None}.values())
    transfer = cache.mover.load_back(host, device) if need else None
    ticket = LoadTicket(end, need, transfer, total * cache.page_size, time.perf_counter(), waits)
    for n in need:
        n.loading = ticket
    cache._loads.append(ticket)
    cache.host_hit_tokens += match.host_len
    cache.load_back_tokens += total * cache.page_size
    cache.lock(end)  # the caller's
    return ticket


def finish_loads(cache: HierarchicalRadixCache) -> int:
    """Finishes the loads whose copies are done (their nodes join device matches, their
    locks go); returns how many are still in flight."""
    still: list[LoadTicket] = []
    now = time.perf_counter()
    for ticket in cache._loads:
        if not ticket.copied():
            still.append(ticket)
            continue
        ticket.finished = True
        for n in ticket.nodes:
            if n.loading is ticket:
                n.loading = None
                cache._push(n)
                if n.parent is not None:
                    cache._push(n.parent)
        cache.load_back_seconds += now - ticket.started
        cache.unlock(ticket.node)
    cache._loads = still
    return len(still)
