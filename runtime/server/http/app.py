"""The starlette application: routes, API-key check, error handlers, and the lifespan that
connects the tokenizer manager to the already-running scheduler and detokenizer."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..tokenizer_manager import TokenizerManager
from . import debug, native, operations
from .body import ClientDisconnected
from .errors import EXCEPTION_HANDLERS, ApiError
from .openai_api import list_models
from .openai_chat import chat_completions
from .openai_completions import completions
from .state import ServerState
from .tokenize import detokenize, tokenize, tokenizer_info

# Liveness probes must work without the key (load balancers do not hold it); the dashboard is a
# static page without data, which asks for the key and sends it on its own requests.
OPEN_PATHS = frozenset({"/health", "/dashboard"})
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"


class ApiKeyMiddleware:
    """Every path but OPEN_PATHS needs `Authorization: Bearer KEY` (401 otherwise)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
            valid = scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), self.key
            )
            if not valid:
                error = ApiError(401, "missing or wrong API key", code="invalid_api_key")
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def metrics(request: Request) -> Response:
    state = native.state_of(request)
    if state.healthy:
        await state.scheduler_stats()  # scheduler figures as of this scrape
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def client_closed(request: Request, exc: Exception) -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


GET, POST, GET_OR_POST = ["GET"], ["POST"], ["GET", "POST"]
ROUTES = [
    Route("/health", operations.health, methods=GET),
    Route("/health_generate", operations.health_generate, methods=GET),
    Route("/model_info", operations.model_info, methods=GET),
    Route("/get_model_info", operations.model_info, methods=GET),
    Route("/server_info", operations.server_info, methods=GET),
    Route("/get_server_info", operations.get_server_info, methods=GET),
    Route("/get_load", operations.get_load, methods=GET),
    Route("/flush_cache", operations.flush_cache, methods=GET_OR_POST),
    Route("/abort_request", operations.abort_request, methods=POST),
    *(
        Route(path, operations.not_implemented, methods=GET_OR_POST)
        for path in operations.NOT_IMPLEMENTED
    ),
    Route("/generate", native.generate, methods=["POST", "PUT"]),
    Route("/metrics", metrics, methods=GET),
    Route("/v1/models", list_models, methods=GET),
    Route("/v1/completions", completions, methods=POST),
    Route("/v1/chat/completions", chat_completions, methods=POST),
    Route("/tokenize", tokenize, methods=POST),
    Route("/detokenize", detokenize, methods=POST),
    Route("/tokenizer_info", tokenizer_info, methods=GET),
    Route("/debug/radix_tree", debug.radix_tree, methods=GET),
    Route("/dashboard", debug.dashboard, methods=GET),
]


def create_app(state: ServerState) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tm = TokenizerManager(state.children)
        tm.on_death.append(state.on_runtime_death)
        tm.start()
        state.tm = tm
        try:
            yield
        finally:
            await tm.close()

    api_key = state.args.api_key
    middleware = [Middleware(ApiKeyMiddleware, api_key=api_key)] if api_key else []
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers={**EXCEPTION_HANDLERS, ClientDisconnected: client_closed},
        lifespan=lifespan,
    )
    app.state.server = state
    return app
