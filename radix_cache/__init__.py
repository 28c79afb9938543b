"""The radix tree of paged KV blocks, its page allocator and eviction policies.

Pure Python data structures: no torch, no model, so the cache is tested and benchmarked alone.
`CACHE_REGISTRY` maps a cache's name to "module:Class" (looked up by `cache_class`, imported on
first use); `EVICTION_POLICIES` maps a policy's name to its class. The CLI's choices are their keys.
"""

from __future__ import annotations

import importlib
from typing import Any

from .allocator import PageAllocator
from .base import (
    CacheStats,
    InsertResult,
    IntegrityError,
    MatchResult,
    NodeRef,
    PrefixCache,
)
from .eviction import (
    EVICTION_POLICIES,
    EvictionPolicy,
    LFUPolicy,
    LRUPolicy,
    PriorityPolicy,
)
from .naive_cache import NaiveCache
from .radix_cache import RadixCache

CACHE_REGISTRY: dict[str, str] = {
    "radix": "radixserve.radix_cache.radix_cache:RadixCache",
    "naive": "radixserve.radix_cache.naive_cache:NaiveCache",
    "block_hash": "radixserve.radix_cache.block_hash_cache:BlockHashCache",
}


def cache_class(name: str) -> type[PrefixCache]:
    if name not in CACHE_REGISTRY:
        raise ValueError(f"unknown prefix cache {name!r}; choose one of {sorted(CACHE_REGISTRY)}")
    module_name, class_name = CACHE_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_cache(name: str, num_pages: int, page_size: int = 1, **options: Any) -> PrefixCache:
    """`create_cache("radix", 4096, 16, policy="lfu")`; options go to the class (only the radix
    cache takes `policy`)."""
    return cache_class(name)(num_pages, page_size, **options)


__all__ = [
    "CACHE_REGISTRY",
    "EVICTION_POLICIES",
    "CacheStats",
    "EvictionPolicy",
    "InsertResult",
    "IntegrityError",
    "LFUPolicy",
    "LRUPolicy",
    "MatchResult",
    "NaiveCache",
    "NodeRef",
    "PageAllocator",
    "PrefixCache",
    "PriorityPolicy",
    "RadixCache",
    "cache_class",
    "create_cache",
]
