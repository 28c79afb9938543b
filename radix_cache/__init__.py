"""The radix tree of paged KV blocks, its page allocator and eviction policies.

Pure Python data structures: no torch, no model. `CACHE_REGISTRY` maps the CLI's names to classes.
"""

from radixserve.radix_cache.allocator import PageAllocator
from radixserve.radix_cache.base import (
    CacheStats,
    InsertResult,
    IntegrityError,
    MatchResult,
    PrefixCache,
)
from radixserve.radix_cache.eviction import EVICTION_POLICIES
from radixserve.radix_cache.naive_cache import NaiveCache
from radixserve.radix_cache.radix_cache import RadixCache

CACHE_REGISTRY: dict[str, type[PrefixCache]] = {"radix": RadixCache, "naive": NaiveCache}

__all__ = [
    "CACHE_REGISTRY",
    "EVICTION_POLICIES",
    "CacheStats",
    "InsertResult",
    "IntegrityError",
    "MatchResult",
    "NaiveCache",
    "PageAllocator",
    "PrefixCache",
    "RadixCache",
]
