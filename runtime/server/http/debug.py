"""Looking at a running server's cache: `GET /debug/radix_tree` and the `/dashboard` page.

`/debug/radix_tree` answers one page of a scheduler's radix tree (the tree lives in the
scheduler process; a `GetTreeReq` asks it between two steps):

    ?offset=0&limit=500&token_preview=8&dp_rank=0
    -> {"kind", "policy", "page_size", "num_pages", "clock", "total_nodes", "offset", "limit",
        "next_offset" (null on the last page), "dp_rank", "dp_size", "running", "waiting",
        "stats" (the cache's counters: free pages, cached / locked / evictable tokens, hit rate),
        "nodes": [{"id", "parent", "depth", "num_tokens", "num_pages", "lock_ref",
                   "last_access", "hits", "num_children", "key_head", "text_head", "tier"}]}

Nodes come parents first (depth-first from the root, children in insertion order); paging on
`next_offset` walks the whole tree once while it does not change under the walk. The tree is
live: between two pages it may have changed, so a page is a snapshot of the moment it was taken.
Like every endpoint but /health and /dashboard, it needs the API key when one is set.

`/dashboard` is one static HTML page (no external script, no build step) that polls this
endpoint and draws the tree, the pool's occupancy and the hit rate. The page holds no data, so
it is served without the key; it asks for the key and sends it on its own requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ...wire.messages import GetTreeReq
from .body import json_response
from .errors import ApiError, decode_error
from .native import state_of

DASHBOARD_FILE = Path(__file__).resolve().parent / "static" / "dashboard.html"


class TreeQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The query string of /debug/radix_tree; `limit` defaults to the HTTP config's page size."""

    offset: int = 0
    limit: int | None = None
    token_preview: int = 8
    dp_rank: int = 0


def parse_query(request: Request) -> TreeQuery:
    try:
        query = msgspec.convert(dict(request.query_params), TreeQuery, strict=False)
    except msgspec.ValidationError as exc:
        raise decode_error(exc) from exc
    config = state_of(request).config
    dp_size = state_of(request).args.dp_size
    checks = (
        ("offset", query.offset >= 0, "must be >= 0"),
        (
            "limit",
            query.limit is None or 1 <= query.limit <= config.debug_tree_max_nodes,
            f"must be between 1 and {config.debug_tree_max_nodes}",
        ),
        (
            "token_preview",
            0 <= query.token_preview <= config.debug_tree_max_preview,
            f"must be between 0 and {config.debug_tree_max_preview}",
        ),
        ("dp_rank", 0 <= query.dp_rank < dp_size, f"must be between 0 and {dp_size - 1}"),
    )
    for name, ok, rule in checks:
        if not ok:
            value = getattr(query, name)
            raise ApiError(400, f"`{name}` {rule}, got {value}", name, code="invalid_value")
    return query


async def radix_tree(request: Request) -> Response:
    state = state_of(request)
    query = parse_query(request)
    limit = query.limit or state.config.debug_tree_default_nodes
    message = GetTreeReq(offset=query.offset, limit=limit, token_preview=query.token_preview)
    replies = await state.manager().cache_tree(message)
    tree = replies[query.dp_rank]
    body: dict[str, Any] = msgspec.to_builtins(tree)
    del body["type"]  # the wire tag
    end = tree.offset + len(tree.nodes)
    body.update(
        limit=limit, dp_size=len(replies), next_offset=end if end < tree.total_nodes else None
    )
    if query.token_preview:
        for node in body["nodes"]:
            node["text_head"] = state.tokenizer.decode(node["key_head"])
    return json_response(body)


async def dashboard(request: Request) -> Response:
    return Response(DASHBOARD_FILE.read_bytes(), media_type="text/html; charset=utf-8")
