"""The integrity check catches each kind of corruption; dumps and dicts show the tree."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from radixserve.radix_cache import IntegrityError, RadixCache
from radixserve.radix_cache.inspection import tree_dump


def small_tree() -> tuple[RadixCache, list[int]]:
    """root -> [1 1 2 2] -> {[3 3] locked, [4 4]} at page size 2; returns the held pages too."""
    cache = RadixCache(12, page_size=2)
    for tokens in ([1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 4, 4]):
        result = cache.insert(tokens, cache.alloc_pages(3))
    cache.lock(cache.match_prefix([1, 1, 2, 2, 3, 3]).node)
    held = cache.alloc_pages(2)
    cache.check_integrity(held_pages=held)
    del result
    return cache, held


def some_leaf(cache: RadixCache, locked: bool):
    node = cache.root
    while node.children:
        node = next(iter(node.children.values()))
    if (node.lock_ref > 0) != locked:
        node = [c for c in node.parent.children.values() if (c.lock_ref > 0) == locked][0]
    return node


def lose_a_page(cache: RadixCache) -> None:
    cache.allocator._top -= 1


def double_cache_a_page(cache: RadixCache) -> None:
    leaf = some_leaf(cache, locked=False)
    leaf.pages[0] = leaf.parent.pages[0]


def negative_lock(cache: RadixCache) -> None:
    some_leaf(cache, locked=False).lock_ref = -1


def key_longer_than_pages(cache: RadixCache) -> None:
    some_leaf(cache, locked=False).key.append(7)


def child_locked_more_than_parent(cache: RadixCache) -> None:
    some_leaf(cache, locked=True).lock_ref = 5


def evictable_leaf_missing_from_heap(cache: RadixCache) -> None:
    cache._heap._heap.clear()


def locked_count_drift(cache: RadixCache) -> None:
    cache._locked_pages += 1


def wrong_parent_pointer(cache: RadixCache) -> None:
    leaf = some_leaf(cache, locked=False)
    leaf.parent = cache.root


@pytest.mark.parametrize(
    "corrupt",
    [
        lose_a_page,
        double_cache_a_page,
        negative_lock,
        key_longer_than_pages,
        child_locked_more_than_parent,
        evictable_leaf_missing_from_heap,
        locked_count_drift,
        wrong_parent_pointer,
    ],
)
def test_integrity_check_catches(corrupt: Callable[[RadixCache], None]) -> None:
    cache, held = small_tree()
    corrupt(cache)
    with pytest.raises(IntegrityError):
        cache.check_integrity(held_pages=held)


def test_held_pages_must_complete_the_pool() -> None:
    cache, held = small_tree()
    with pytest.raises(IntegrityError, match="lost"):
        cache.check_integrity(held_pages=held[:1])
    with pytest.raises(IntegrityError, match="both"):
        cache.check_integrity(held_pages=held + [held[0]])
    cache.check_integrity()  # without held pages only disjointness is checked


def test_dump_shows_the_tree() -> None:
    cache, _ = small_tree()
    text = cache.dump()
    lines = text.splitlines()
    assert lines[0].startswith("radix tree: page_size=2, 12 pages (6 free, 4 cached, 3 locked)")
    assert lines[1] == "root"
    assert lines[2].startswith("`-- #") and "[1 1 2 2] 4 tok" in lines[2] and "lock 1" in lines[2]
    assert "+-- #" in lines[3] and "[3 3]" in lines[3]
    assert "`-- #" in lines[4] and "[4 4]" in lines[4] and "lock 0" in lines[4]


def test_to_dict_is_json_and_mirrors_the_tree() -> None:
    cache, _ = small_tree()
    view = json.loads(json.dumps(cache.to_dict()))
    assert (view["kind"], view["page_size"], view["policy"]) == ("radix", 2, "lru")
    assert view["stats"]["cached_tokens"] == 8
    root, top, first, second = view["nodes"]
    assert (root["id"], root["parent"], root["num_children"]) == (0, None, 1)
    assert (top["parent"], top["num_tokens"], top["lock_ref"]) == (0, 4, 1)
    assert [first["key_head"], second["key_head"]] == [[3, 3], [4, 4]]
    assert first["parent"] == second["parent"] == top["id"]


def test_deep_chains_do_not_recurse() -> None:
    cache = RadixCache(1200, page_size=1)
    tokens: list[int] = []
    table: list[int] = []
    for i in range(1100):  # each insert extends the last: a chain deeper than the recursion limit
        tokens.append(i)
        table += cache.alloc_pages(1)
        cache.insert(tokens, table)
    assert cache.num_nodes == 1101
    cache.check_integrity(held_pages=[])
    lines = cache.dump().splitlines()
    assert len(lines) == 1102 and "(depth 1100) " in lines[-1]
    assert max(map(len, lines)) < 200  # indentation stops growing
    lines = tree_dump(cache, max_nodes=1000).splitlines()
    assert len(lines) == 1003 and lines[-1] == "... (100 more nodes)"
    json.dumps(cache.to_dict())
    assert cache.flush() == 1100
