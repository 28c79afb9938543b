"""Data-parallel routing: which scheduler replica gets a request.

With `--dp-size N` the runtime has N scheduler replicas, each with its own model copy and radix
cache. A prefix is only reused where it was computed, so the router keeps, per replica, an
approximate copy of that replica's radix tree: every prompt routed there is inserted into a
`RadixCache` of the replica's size and page size, whose LRU eviction ages it out as the real
cache would (approximate: the router sees prompts, not generated tokens or retractions).

`cache_aware` (the default) sends a request to the replica whose tree matches the longest prefix
of its prompt, when that match covers at least CACHE_THRESHOLD of the prompt and that replica is
not overloaded (more than BALANCE_ABS_THRESHOLD requests in flight beyond the least loaded one).
Otherwise, and with `shortest_queue`, it goes to the replica with the fewest requests in flight
(ties: the smaller tree, so distinct prefixes spread out). `round_robin` rotates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...radix_cache import RadixCache

LOAD_BALANCE_METHODS = ("cache_aware", "shortest_queue", "round_robin")
CACHE_THRESHOLD = 0.5
BALANCE_ABS_THRESHOLD = 32


@dataclass(slots=True)
class RouteDecision:
    replica: int
    matched_tokens: int  # of the prompt, in the chosen replica's approximate tree
    reason: str  # "cache", "load", "round_robin" or "pinned"


class DataParallelRouter:
    def __init__(self, num_replicas: int, method: str, num_pages: int, page_size: int) -> None:
        if method not in LOAD_BALANCE_METHODS:
            raise ValueError(
                f"unknown load balance method {method!r}; choose {LOAD_BALANCE_METHODS}"
            )
        if num_replicas < 1:
            raise ValueError(f"dp_size must be >= 1, got {num_replicas}")
        self.method = method
        self.page_size = page_size
        self.trees = [RadixCache(num_pages, page_size) for _ in range(num_replicas)]
        self.in_flight = [0] * num_replicas
        self.routed = [0] * num_replicas
        self._next = 0

    @property
    def num_replicas(self) -> int:
        return len(self.trees)

    def route(self, prompt: Sequence[int], pinned: int | None = None) -> RouteDecision:
        """Chooses a replica for `prompt` (or takes `pinned`, the one the client named) and
        counts the request in flight there."""
        if pinned is not None:
            decision = RouteDecision(pinned, 0, "pinned")
        elif self.method == "round_robin":
            decision = RouteDecision(self._next, 0, "round_robin")
            self._next = (self._next + 1) % self.num_replicas
        else:
            decision = self._choose(prompt)
        self._remember(decision.replica, prompt)
        self.in_flight[decision.replica] += 1
        self.routed[decision.replica] += 1
        return decision

    def finished(self, replica: int) -> None:
        self.in_flight[replica] = max(self.in_flight[replica] - 1, 0)

    def _choose(self, prompt: Sequence[int]) -> RouteDecision:
        least = min(self.in_flight)
        if self.method == "cache_aware":
            matches = [tree.match_prefix(prompt).cached_len for tree in self.trees]
            best = max(range(self.num_replicas), key=lambda i: (matches[i], -self.in_flight[i]))
            covered = matches[best] >= CACHE_THRESHOLD * len(prompt) and matches[best] > 0
            balanced = self.in_flight[best] - least <= BALANCE_ABS_THRESHOLD
            if covered and balanced:
                return RouteDecision(best, matches[best], "cache")
        idle = [i for i in range(self.num_replicas) if self.in_flight[i] == least]
        replica = min(idle, key=lambda i: (self.trees[i].num_cached_pages, i))
        return RouteDecision(replica, 0, "load")

    def _remember(self, replica: int, prompt: Sequence[int]) -> None:
        """Inserts the prompt's whole pages into the replica's approximate tree."""
        tree = self.trees[replica]
        usable = min(len(prompt), tree.num_pages * self.page_size)
        aligned = list(prompt[: usable // self.page_size * self.page_size])
        if not aligned:
            return
        match = tree.match_prefix(aligned)
        tree.lock(match.node)  # the allocation below must not evict the matched path
        try:
            new_pages = tree.alloc_pages(len(aligned) // self.page_size - len(match.pages))
            if new_pages is not None:
                tree.insert(aligned, list(match.pages) + new_pages)
        finally:
            tree.unlock(match.node)
