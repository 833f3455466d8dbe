"""The live page: a run's events in a browser, served by ``zstream-mp serve`` itself.

Plain HTML, JS and CSS from ``server/static`` (shipped in the wheel; no build step, no CDN).
``/`` lists runs, ``/runs/{run_id}`` shows one run live. The page reads through three
routes under ``/ui/``, each a thin wrapper around the API handler it names, so auth,
filters, resume and 404s behave exactly as on the API:

- ``/ui/api/runs``, ``/ui/api/runs/{run_id}``: the run list and status;
- ``/ui/api/runs/{run_id}/stream``: the run's SSE stream for the browser's ``EventSource``,
  with each event's receive time (``ui_stream.py``). A ``retry: 1000`` line makes the
  browser reconnect within a second, resuming with ``Last-Event-ID``.

Auth without the token in a URL: an ``EventSource`` cannot send an ``Authorization``
header, so the page asks for a token once and ``POST``s it to ``/ui/session``; the server
checks it has the ``read`` right and sets it as an ``HttpOnly``, ``SameSite=Strict`` cookie
scoped to ``/ui/api/``. Only ``GET`` requests under that prefix accept the cookie (they are
reads, so a cross-site form cannot publish with it); the API routes keep requiring the
header. ``DELETE /ui/session`` clears it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from zstream_mp._wire import bearer
from zstream_mp.server.body import read_body
from zstream_mp.server.favicon import FAVICON_SVG
from zstream_mp.server.models import parse_uuid
from zstream_mp.server.ui_stream import RECONNECT_MS, page_frames

if TYPE_CHECKING:
    from zstream_mp.server.run_api import RunAPI
    from zstream_mp.server.state import ServerState

Handler = Callable[[Request], Awaitable[Response]]

COOKIE = "zstream_read_token"
SESSION_BODY_MAX = 4096
"""Bytes of a `POST /ui/session` body (`{"token": "..."}`): it is read before any auth."""
API_PREFIX = "/ui/api/"
__all__ = ["API_PREFIX", "COOKIE", "RECONNECT_MS", "routes"]
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _assets() -> dict[str, bytes]:
    """Every file of ``static/`` by name, read once (the directory is small)."""
    folder = resources.files("zstream_mp.server").joinpath("static")
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and any(item.name.endswith(s) for s in _TYPES)
    }


def _asset_response(assets: dict[str, bytes], name: str) -> Response:
    body = assets.get(name)
    if body is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    suffix = name[name.rfind(".") :]
    return Response(body, media_type=_TYPES[suffix], headers=_PAGE_HEADERS)


def _with_cookie(handler: Handler) -> Handler:
    """Let a GET carry its read token in the session cookie instead of the header."""

    async def endpoint(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if token and request.method == "GET" and "authorization" not in request.headers:
            scope = dict(request.scope)
            scope["headers"] = [
                *request.scope["headers"],
                (b"authorization", bearer(token).encode("latin-1", "replace")),
            ]
            request = Request(scope, request.receive)
        return await handler(request)

    return endpoint


def routes(
    state: ServerState, stream: Handler, runs: RunAPI, guard: Callable[[Handler], Handler]
) -> list[Route]:
    """The page's routes; ``stream`` is the API's guarded SSE handler."""
    assets = _assets()

    async def index(request: Request) -> Response:
        return _asset_response(assets, "index.html")

    async def run_page(request: Request) -> Response:
        return _asset_response(assets, "run.html")

    async def static(request: Request) -> Response:
        return _asset_response(assets, request.path_params["name"])

    async def favicon(request: Request) -> Response:
        return Response(FAVICON_SVG, media_type="image/svg+xml", headers=_PAGE_HEADERS)

    async def browser_stream(request: Request) -> Response:
        response = await stream(request)
        if isinstance(response, StreamingResponse) and response.status_code == 200:
            key = state.key(parse_uuid(request.path_params["run_id"]))
            response.body_iterator = page_frames(
                response.body_iterator, lambda entry_id: state.broker.received_at(key, entry_id)
            )
        return response

    async def session(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(
                {"auth": state.auth.enabled, "cookie": COOKIE in request.cookies},
            )
        if request.method == "DELETE":
            response = Response(status_code=204)
            response.delete_cookie(COOKIE, path=API_PREFIX)
            return response
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # a cross-site form cannot send this type without a CORS preflight
            return JSONResponse({"detail": "Send application/json."}, status_code=415)
        # unauthenticated until the token in it is checked: tiny, and read with a deadline
        raw = await read_body(request, SESSION_BODY_MAX, state.config.body_timeout)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return JSONResponse({"detail": 'Send {"token": "..."}.'}, status_code=422)
        rights = state.auth.rights(token) if state.auth.enabled else frozenset({"read"})
        if rights is None:
            return JSONResponse({"detail": "This token is not valid here."}, status_code=401)
        if "read" not in rights:
            return JSONResponse(
                {"detail": "This token does not have the 'read' right."}, status_code=403
            )
        response = Response(status_code=204)
        response.set_cookie(
            COOKIE,
            token,
            path=API_PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/runs/{run_id}", run_page, methods=["GET", "HEAD"]),
        Route("/ui/static/{name}", static, methods=["GET", "HEAD"]),
        Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
        Route("/favicon.svg", favicon, methods=["GET", "HEAD"]),
        Route("/ui/session", guard(session), methods=["GET", "POST", "DELETE"]),
        Route(API_PREFIX + "runs", guard(_with_cookie(runs.list_runs)), methods=["GET"]),
        Route(API_PREFIX + "runs/{run_id}", guard(_with_cookie(runs.status)), methods=["GET"]),
        Route(
            API_PREFIX + "runs/{run_id}/stream",
            guard(_with_cookie(browser_stream)),
            methods=["GET"],
        ),
    ]
