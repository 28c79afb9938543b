"""The radix tree of paged KV blocks, its page allocator and eviction policies.

Pure Python data structures: no torch, no model, so the cache is tested and benchmarked alone.
Two registries (utils/registry.py) name the choices, and the CLI's flags offer exactly their keys:
`CACHE_REGISTRY` the prefix caches (`--prefix-cache`), `EVICTION_POLICIES` the radix cache's
eviction orders (`--radix-eviction-policy`).
"""

from __future__ import annotations

from ..utils.registry import Registry
from .allocator import PageAllocator
from .base import (
    CacheStats,
    InsertResult,
    IntegrityError,
    MatchResult,
    NodeRef,
    PrefixCache,
)
from .eviction import EVICTION_POLICIES, EvictionPolicy, LFUPolicy, LRUPolicy
from .naive_cache import NaiveCache
from .radix_cache import RadixCache

CACHE_REGISTRY: Registry[PrefixCache] = Registry(
    "prefix cache",
    {
        "radix": ".radix_cache:RadixCache",
        "block_hash": ".block_hash_cache:BlockHashCache",  # vLLM's design, one hash per block
        "naive": ".naive_cache:NaiveCache",  # shares nothing: --disable-radix-cache
    },
    package=__name__,
    base=PrefixCache,
)


def cache_class(name: str) -> type[PrefixCache]:
    return CACHE_REGISTRY.load(name)


def create_cache(name: str, num_pages: int, page_size: int = 1, policy: str = "lru") -> PrefixCache:
    """`create_cache("radix", 4096, 16, policy="lfu")`. Only the radix cache has a choice of
    eviction order (EVICTION_POLICIES); the others evict least recently used first and refuse
    any other policy with a ValueError."""
    return cache_class(name)(num_pages, page_size, policy)


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
    "RadixCache",
    "cache_class",
    "create_cache",
]
