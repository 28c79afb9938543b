"""Orders the waiting queue before admission.

- fcfs: arrival order.
- lpm: longest cached prefix first (falls back to fcfs for very long queues, where matching every
  waiting request each step would cost more than it saves).
- dfs-weight (SGLang paper): weigh each tree node by the waiting requests under it and walk the
  tree depth-first, heavier children first, so requests sharing a prefix run back to back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from ...radix_cache.base import MatchResult, NodeRef
from ..config.server_args import SCHEDULE_POLICIES
from .request import Req

LPM_QUEUE_LIMIT = 128


def order_waiting(
    policy: str, waiting: list[Req], match: Callable[[Req], MatchResult]
) -> list[Req]:
    if policy == "fcfs" or len(waiting) > LPM_QUEUE_LIMIT:
        return sorted(waiting, key=lambda r: r.arrival)
    if policy == "lpm":
        keyed = [(match(r).cached_len, r) for r in waiting]
        keyed.sort(key=lambda item: (-item[0], item[1].arrival))
        return [r for _, r in keyed]
    if policy == "dfs-weight":
        return _dfs_weight(waiting, match)
    raise ValueError(f"unknown schedule policy {policy!r}; choose one of {SCHEDULE_POLICIES}")


def _dfs_weight(waiting: list[Req], match: Callable[[Req], MatchResult]) -> list[Req]:
    at_node: dict[int, list[Req]] = defaultdict(list)
    nodes: dict[int, NodeRef] = {}
    for r in sorted(waiting, key=lambda r: r.arrival):
        node = match(r).node
        at_node[id(node)].append(r)
        nodes[id(node)] = node
    weight: dict[int, int] = defaultdict(int)
    # Insertion-ordered dicts, not sets of id()s: equal weights then break ties by arrival
    # (sorted is stable) instead of by memory address, so the order is reproducible.
    children: dict[int, dict[int, None]] = defaultdict(dict)
    root_ids: dict[int, None] = {}
    for node_id, reqs in at_node.items():
        node = nodes[node_id]
        while True:
            weight[id(node)] += len(reqs)
            parent = getattr(node, "parent", None)
            if parent is None:
                root_ids[id(node)] = None
                break
            nodes[id(parent)] = parent
            children[id(parent)][id(node)] = None
            node = parent
    ordered: list[Req] = []
    stack = sorted(root_ids, key=lambda n: weight[n])
    while stack:
        node_id = stack.pop()
        ordered.extend(at_node.get(node_id, ()))
        stack.extend(sorted(children[node_id], key=lambda n: weight[n]))
    return ordered
