"""The scheduler's protocol (base.py) run against every cache, integrity checked at each step.

The same request code drives the radix, naive and block-hash caches: that is the contract.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from radixserve.radix_cache import PrefixCache, create_cache

CACHES = ["radix", "naive", "block_hash"]


@dataclass
class Request:
    tokens: list[int]
    page_table: list[int] = field(default_factory=list)
    node: object = None
    tree_len: int = 0  # tokens whose pages the cache owns (locked through `node`)
    kv_len: int = 0  # tokens computed


def held_pages(cache: PrefixCache, reqs: list[Request]) -> list[int]:
    return [p for r in reqs for p in r.page_table[r.tree_len // cache.page_size :]]


def admit(cache: PrefixCache, req: Request) -> None:
    match = cache.match_prefix(req.tokens[:-1])  # the last token is always computed
    cache.lock(match.node)
    req.node, req.page_table = match.node, list(match.pages)
    req.tree_len = req.kv_len = match.cached_len


def extend(cache: PrefixCache, req: Request, n: int) -> bool:
    ps = cache.page_size
    need = -(-(req.kv_len + n) // ps) - len(req.page_table)
    pages = cache.alloc_pages(max(need, 0))
    if pages is None:
        return False
    req.page_table += pages
    req.kv_len += n
    return True


def commit(cache: PrefixCache, req: Request) -> None:
    ps = cache.page_size
    aligned = req.kv_len // ps * ps
    if aligned <= req.tree_len:
        return
    result = cache.insert(req.tokens[:aligned], req.page_table[: aligned // ps])
    req.page_table[: aligned // ps] = result.pages
    cache.lock(result.node)
    cache.unlock(req.node)
    req.node, req.tree_len = result.node, aligned


def release(cache: PrefixCache, req: Request) -> None:
    commit(cache, req)
    cache.unlock(req.node)
    cache.free_pages(req.page_table[req.tree_len // cache.page_size :])
    req.page_table, req.node, req.tree_len, req.kv_len = [], None, 0, 0


@pytest.mark.parametrize("page_size", [1, 4, 16])
@pytest.mark.parametrize("name", CACHES)
def test_two_requests_computing_the_same_prefix(name: str, page_size: int) -> None:
    cache = create_cache(name, 64, page_size)
    prompt = list(range(100, 100 + 3 * page_size + page_size // 2 + 1))  # 3.5 pages (+1)
    a, b = Request(prompt), Request(list(prompt))
    running = [a, b]

    def check() -> None:
        cache.check_integrity(held_pages=held_pages(cache, running))

    for req in running:  # both admitted before either inserts: neither hits the cache
        admit(cache, req)
        assert req.tree_len == 0
        check()
    chunk = 2 * page_size
    for req in running:  # first prefill chunk, then a commit of its whole pages
        assert extend(cache, req, chunk)
        check()
        commit(cache, req)
        check()
    if name != "naive":
        assert b.page_table[:2] == a.page_table[:2], "b adopted a's pages for the shared chunk"
    for req in running:  # the rest of the prompt, then finish
        assert extend(cache, req, len(prompt) - chunk)
        check()
    release(cache, a)
    running.remove(a)
    check()
    release(cache, b)
    running.remove(b)
    check()
    whole_pages = len(prompt) // page_size
    if name == "naive":
        assert cache.num_free_pages == 64 and cache.num_cached_pages == 0
    else:
        assert cache.num_cached_pages == whole_pages
        assert cache.num_free_pages == 64 - whole_pages
        if name == "radix":
            assert cache.stats().duplicate_pages_freed == whole_pages
    c = Request(list(prompt))
    admit(cache, c)
    expected = 0 if name == "naive" else whole_pages * page_size
    assert c.tree_len == min(expected, (len(prompt) - 1) // page_size * page_size)
    release(cache, c)
    cache.flush()
    cache.check_integrity(held_pages=[])
    assert cache.num_free_pages == 64


@pytest.mark.parametrize("page_size", [1, 4, 16])
@pytest.mark.parametrize("name", CACHES)
def test_random_workload_under_memory_pressure(name: str, page_size: int) -> None:
    rng = random.Random(page_size * 31 + len(name))
    num_pages = 48 if page_size > 1 else 400
    cache = create_cache(name, num_pages, page_size)
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(1, 6 * page_size))] for _ in "ab"]
    waiting = [
        Request(rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(1, 40))])
        for _ in range(60)
    ]
    running: list[Request] = []
    finished = 0
    for _ in range(5000):
        if not waiting and not running:
            break
        if waiting and len(running) < 4 and rng.random() < 0.5:
            req = waiting.pop(0)
            admit(cache, req)
            running.append(req)
        elif running:
            req = rng.choice(running)
            todo = len(req.tokens) - req.kv_len
            if todo and extend(cache, req, min(todo, rng.randrange(1, 3 * page_size + 2))):
                if rng.random() < 0.5:
                    commit(cache, req)
            elif todo and len(running) > 1:  # out of pages: retract it, retry later
                release(cache, req)
                running.remove(req)
                waiting.append(req)
            elif not todo:
                release(cache, req)
                running.remove(req)
                finished += 1
        cache.check_integrity(held_pages=held_pages(cache, running))
    assert finished == 60
    cache.flush()
    cache.check_integrity(held_pages=[])
    assert cache.num_free_pages == num_pages and cache.num_locked_pages == 0
    if name == "radix":
        assert cache.stats().hit_tokens > 0
