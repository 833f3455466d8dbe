"""Composition and middleware: the routes, the no-500 guard, ZenML's headers, the lifespan.

Endpoints (paths from `_wire`): ZenML's two streaming endpoints, `/health` (liveness),
`/ready` (readiness: the broker answers), a small run lifecycle API under
`/api/v1/zstream/` (not in ZenML) and the live page under `/ui/`. The handlers live in
`handlers.py`, the run list and status in `run_api.py`, the page in `ui.py`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zstream_mp._wire import (
    EVENTS_PATH,
    HEALTH_PATH,
    READY_PATH,
    RUN_END_PATH,
    RUNS_PATH,
    STREAM_PATH,
)
from zstream_mp.server import run_api, ui
from zstream_mp.server.body import refusal
from zstream_mp.server.connections import ConnectionRegistry
from zstream_mp.server.handlers import Handlers
from zstream_mp.server.origins import HostPolicy, OriginGuard
from zstream_mp.server.sse import CACHE_CONTROL
from zstream_mp.server.state import ServerState, open_state
from zstream_mp.server.zenml_errors import exception_response

__all__ = ["ServerState", "create_app", "open_state"]

logger = logging.getLogger("zstream_mp.server")


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return PlainTextResponse("ok")


def _guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """No input ever yields a 500: body problems map to ZenML's answers, the rest to 400."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception as exc:
            refused = refusal(exc)  # a body refused by its size, time or parse cost
            if refused is not None:
                return refused
            logger.exception("unexpected error handling %s %s", request.method, request.url.path)
            return exception_response(400, type(exc).__name__, str(exc))

    return endpoint


class _ZenMLHeaders:
    """Bare 413 above the body limit (by Content-Length) and ZenML's Cache-Control on all."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_body
                except ValueError:
                    too_large = False
                if too_large:
                    await Response(status_code=413)(scope, receive, send)
                    return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", CACHE_CONTROL.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _RequestMarks:
    """Tells the connection registry when each request starts and ends (its head timeout
    runs only while a connection has no request in progress)."""

    def __init__(self, app: ASGIApp, connections: ConnectionRegistry) -> None:
        self.app = app
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        self.connections.request_started(client)
        try:
            await self.app(scope, receive, send)
        finally:
            self.connections.request_finished(client)


def create_app(state: ServerState) -> Starlette:
    """The Starlette app; its lifespan shuts subscribers down and closes the broker."""
    handlers = Handlers(state)
    runs = run_api.RunAPI(state, handlers.gate)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.broadcaster.shut_down()
            await state.broker.close()

    routes = [
        Route(HEALTH_PATH, health, methods=["GET", "HEAD"]),
        Route(READY_PATH, _guarded(handlers.ready), methods=["GET", "HEAD"]),
        Route(EVENTS_PATH, _guarded(handlers.publish_run_events), methods=["POST"]),
        Route(STREAM_PATH, _guarded(handlers.stream_run_events), methods=["GET"]),
        *runs.routes(_guarded, handlers.create_run),
        Route(RUN_END_PATH, _guarded(handlers.end_run), methods=["POST"]),
    ]
    routes += ui.routes(state, _guarded(handlers.stream_run_events), runs, _guarded)
    app = Starlette(routes=routes, lifespan=lifespan)
    config = state.config
    app.add_middleware(_ZenMLHeaders, max_body=config.max_request_body)
    app.add_middleware(
        OriginGuard,
        policy=HostPolicy(config.host, config.allowed_hosts),
        form_free_paths=(RUNS_PATH, "/ui/"),
    )
    app.add_middleware(_RequestMarks, connections=state.connections)
    return app
