"""Request-level KV bookkeeping on top of the prefix cache.

A request's page table has two parts:

    page_table: | tree-owned pages (locked via req.node) | private pages (this request only) |
                |<------------ tree_len tokens -------->|<---- up to kv_len + this step ---->|

Admission matches the prompt and locks the matched path; computed whole pages move into the tree
after each prefill chunk and at the end (`commit`), so requests arriving later can share them;
`release` unlocks the path and frees the private pages. Nothing here touches the model.
"""

from __future__ import annotations

from ...radix_cache.base import MatchResult, PrefixCache
from ...radix_cache.hicache import HierarchicalRadixCache
from .request import Req


def pages_for(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)


class RequestKVManager:
    def __init__(self, cache: PrefixCache, page_size: int, sharing: bool) -> None:
        self.cache = cache
        self.page_size = page_size
        # A non-sharing (naive) cache never takes pages into a tree: requests keep them private.
        self.sharing = sharing
        self.hierarchical = isinstance(cache, HierarchicalRadixCache)

    def match(self, req: Req) -> MatchResult:
        return self.cache.match_prefix(req.fill_ids[: req.max_match_len])

    # --- the host tier (hierarchical cache) ------------------------------------------------------
    #
    #   waiting --match reaches host nodes--> loading --copy done--> match again (all device)
    #           --> admit (as usual)            the request holds a lock on the loaded path
    #
    # A request is admitted only once its pages are on the device; on the CPU the copy is done
    # when `load_back` returns, so it is admitted in the same step.

    def poll_loads(self) -> None:
        if isinstance(self.cache, HierarchicalRadixCache):
            self.cache.poll_loads()

    def ready(self, req: Req, match: MatchResult) -> tuple[bool, MatchResult]:
        """Whether the request may be admitted now, and the match to admit it with. Starts a
        load-back when the match reaches host-resident KV (a request whose load cannot get
        device pages now is admitted with its device part: it recomputes the rest)."""
        cache = self.cache
        if not isinstance(cache, HierarchicalRadixCache):
            return True, match
        if req.loading is None:
            if not match.host_len:
                return True, match
            req.loading = cache.load_back(match)
            if req.loading is None:
                return True, match
        if not req.loading.done():
            return False, match
        cache.poll_loads()
        return True, self.match(req)

    def tier_totals(self) -> tuple[int, int, int]:
        """The host tier's running totals: host hit, load-back and write-back tokens."""
        cache = self.cache
        if not isinstance(cache, HierarchicalRadixCache):
            return (0, 0, 0)
        return (cache.host_hit_tokens, cache.load_back_tokens, cache.write_back_tokens)

    def _drop_load(self, req: Req) -> None:
        """Gives up the request's lock on its loaded path (the load's own lock stays until the
        copy lands, so an abort meanwhile frees every page of both tiers once it has)."""
        if req.loading is not None:
            self.cache.unlock(req.loading.node)
            req.loading = None

    def admit(self, req: Req, match: MatchResult) -> None:
        """Locks the matched path and adopts its pages as the start of the page table."""
        self.cache.lock(match.node)
        self._drop_load(req)
        req.node = match.node
        req.page_table = list(match.pages)
        req.kv_len = req.tree_len = match.cached_len
        if not req.admitted:
            req.cached_len = min(match.cached_len, len(req.prompt_ids))
            req.admitted = True

    def extra_pages_needed(self, req: Req, extend_len: int) -> int:
        return max(pages_for(req.kv_len + extend_len, self.page_size) - len(req.page_table), 0)

    def decode_pages_needed(self, reqs: list[Req]) -> int:
        """sum(extra_pages_needed(r, 1) for r in reqs), computed inline for the per-step hot path:
        a decode needs a page only when its next token starts one, so at most one page each."""
        page_size = self.page_size
        return sum((r.kv_len + page_size) // page_size > len(r.page_table) for r in reqs)

    def reserve(self, req: Req, extend_len: int) -> bool:
        """Gives the request pages for `extend_len` more tokens, evicting if needed."""
        need = self.extra_pages_needed(req, extend_len)
        if need == 0:
            return True
        pages = self.cache.alloc_pages(need)
        if pages is None:
            return False
        req.page_table.extend(pages)
        return True

    def commit(self, req: Req) -> None:
        """Moves the request's computed whole pages into the tree and re-locks its longer path.

        Only tokens known on the host key the tree: a launched slice's KV counts in kv_len, but
        its sample (a future input) or unverified drafts are not in fill yet."""
        aligned = min(req.kv_len, req.fill_len) // self.page_size * self.page_size
        if not self.sharing or aligned <= req.tree_len:
            return
        num_pages = aligned // self.page_size
        result = self.cache.insert(req.fill_ids[:aligned], req.page_table[:num_pages])
        req.page_table[:num_pages] = result.pages
        self.cache.lock(result.node)
        self.cache.unlock(req.node)
        req.node = result.node
        req.tree_len = aligned

    def release(self, req: Req) -> None:
        """Commits what was computed, unlocks, and frees every private page."""
        self._drop_load(req)
        if req.node is None:
            return
        self.commit(req)
        self.cache.unlock(req.node)
        private = req.page_table[req.tree_len // self.page_size :]
        if private:
            self.cache.free_pages(private)
        req.page_table = []
        req.node = None
        req.kv_len = req.tree_len = 0

    def held_pages(self, reqs: list[Req]) -> list[int]:
        """Private pages of running requests (for the cache's integrity check)."""
        return [p for r in reqs for p in r.page_table[r.tree_len // self.page_size :]]
