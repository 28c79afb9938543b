"""GET /debug/radix_tree on a real server: the scheduler's tree in pages (parents first, the
whole tree once), hit counts and locks as requests use it, bad queries refused by name, the
API key required; /dashboard served without the key."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.runtime.server.http.conftest import ServerProcess

pytestmark = pytest.mark.slow
SHARED = (
    "You are a careful assistant for a library. You answer questions about opening hours, "
    "loans, renewals and fines in one short sentence, and you never invent a rule. "
)
GREEDY = {"max_new_tokens": 2, "temperature": 0}
# SHARED is 35 tokens and every question over 16, so at 16 tokens a page two whole pages are
# shared and each prompt has a page of its own.
MORE = " Please answer for the main library building in the city centre, not the branches."


def tree(client: httpx.Client, **query: Any) -> dict[str, Any]:
    reply = client.get("/debug/radix_tree", params=query)
    assert reply.status_code == 200, reply.text
    return reply.json()


def whole_tree(client: httpx.Client, limit: int) -> list[dict[str, Any]]:
    nodes, offset = [], 0
    while offset is not None:
        page = tree(client, offset=offset, limit=limit)
        assert len(page["nodes"]) <= limit and page["limit"] == limit
        nodes += page["nodes"]
        offset = page["next_offset"]
    return nodes


def test_the_tree_shows_a_shared_prefix_with_its_hits(client: httpx.Client) -> None:
    assert client.post("/flush_cache").status_code == 200
    for question in ("When do you open on Sundays?", "How long can I keep a book?"):
        body = {"text": SHARED + question + MORE, "sampling_params": GREEDY}
        assert client.post("/generate", json=body).status_code == 200
    view = tree(client, token_preview=4)
    assert view["kind"] == "radix" and view["dp_size"] == 1 and view["next_offset"] is None
    nodes, ps = view["nodes"], view["page_size"]
    assert len(nodes) == view["total_nodes"] >= 3
    root = nodes[0]
    assert root["id"] == 0 and root["parent"] is None and root["depth"] == 0
    depth = {0: 0}
    for node in nodes[1:]:
        assert depth[node["parent"]] == node["depth"] - 1  # parents come first
        depth[node["id"]] = node["depth"]
        assert node["num_tokens"] == node["num_pages"] * ps > 0
        assert node["lock_ref"] == 0 and 0 < node["last_access"] <= view["clock"]
        assert len(node["key_head"]) == 4 and isinstance(node["text_head"], str)
    # The second prompt matched the first one's pages: the shared node has a hit.
    shared = [n for n in nodes if n["depth"] == 1]
    assert len(shared) == 1 and shared[0]["hits"] >= 1 and shared[0]["num_children"] == 2
    assert shared[0]["text_head"].startswith("You are")
    stats = view["stats"]
    assert stats["cached_tokens"] == sum(n["num_tokens"] for n in nodes)
    assert stats["hit_tokens"] >= shared[0]["num_tokens"] and stats["num_nodes"] == len(nodes)


def test_pages_cover_the_tree_once(client: httpx.Client) -> None:
    for question in (
        "Can I renew online?",
        "What is the fine for a late book?",
        "Do you lend DVDs?",
    ):
        body = {"text": SHARED + question + MORE, "sampling_params": GREEDY}
        assert client.post("/generate", json=body).status_code == 200
    full = tree(client, limit=1000)["nodes"]
    for limit in (1, 2):
        assert whole_tree(client, limit) == full


def test_a_running_request_shows_its_locked_path(
    server: ServerProcess, client: httpx.Client
) -> None:
    body = {"text": SHARED + "Tell me a long story.", "sampling_params": {
        "max_new_tokens": 2000, "ignore_eos": True, "temperature": 0}}  # fmt: skip
    worker = threading.Thread(target=lambda: server.client().post("/generate", json=body))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        view = tree(client)
        while time.monotonic() < deadline and not any(n["lock_ref"] for n in view["nodes"]):
            time.sleep(0.2)
            view = tree(client)
        assert view["running"] == 1
        locked = [n for n in view["nodes"] if n["lock_ref"] > 0]
        assert locked and view["stats"]["locked_tokens"] == sum(n["num_tokens"] for n in locked)
    finally:
        client.post("/abort_request", json={"abort_all": True})
        worker.join(60)
    assert not any(n["lock_ref"] for n in tree(client)["nodes"])


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10**6}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "first"}, "offset"),
        ({"token_preview": 1000}, "token_preview"),
        ({"dp_rank": 1}, "dp_rank"),
        ({"depth": 3}, "depth"),
    ],
)
def test_bad_queries_are_refused_by_name(
    client: httpx.Client, query: dict[str, Any], param: str
) -> None:
    reply = client.get("/debug/radix_tree", params=query)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_the_tree_needs_the_key_and_the_dashboard_does_not(server: ServerProcess) -> None:
    assert httpx.get(f"{server.base_url}/debug/radix_tree").status_code == 401
    page = httpx.get(f"{server.base_url}/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/debug/radix_tree" in page.text and "<script src" not in page.text  # nothing external
