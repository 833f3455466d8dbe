"""The page's login: its read token kept in a cookie, never in a URL.

An `EventSource` cannot send an `Authorization` header, so the page asks for a token once
and `POST`s it to `/ui/session`; the server checks it has the `read` right and sets it as
an `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui/api/`. Only `GET` requests under that
prefix accept the cookie (they are reads, so a cross-site form cannot publish with it); the
API routes keep requiring the header. `DELETE /ui/session` clears it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from zstream_mp._wire import bearer
from zstream_mp.server.body import read_body

if TYPE_CHECKING:
    from zstream_mp.server.state import ServerState

__all__ = ["API_PREFIX", "COOKIE", "SESSION_BODY_MAX", "Handler", "session", "with_cookie"]

Handler = Callable[[Request], Awaitable[Response]]

COOKIE = "zstream_read_token"
SESSION_BODY_MAX = 4096
"""Bytes of a `POST /ui/session` body (`{"token": "..."}`): it is read before any auth."""
API_PREFIX = "/ui/api/"
"""The routes that accept the cookie (GET only)."""


def with_cookie(handler: Handler) -> Handler:
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


def session(state: ServerState) -> Handler:
    """`/ui/session`: GET says whether auth is on and a cookie is set, POST logs in,
    DELETE logs out."""

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"auth": state.auth.enabled, "cookie": COOKIE in request.cookies})
        if request.method == "DELETE":
            response = Response(status_code=204)
            response.delete_cookie(COOKIE, path=API_PREFIX)
            return response
        return await _log_in(state, request)

    return endpoint


async def _log_in(state: ServerState, request: Request) -> Response:
    """Set the cookie for a posted token with the `read` right (415/422/401/403 otherwise)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        # a cross-site form cannot send this type without a CORS preflight
        return JSONResponse({"detail": "Send application/json."}, status_code=415)
    token = await _posted_token(state, request)
    if token is None:
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


async def _posted_token(state: ServerState, request: Request) -> str | None:
    """The body's `token`: unauthenticated until checked, so tiny and read with a deadline."""
    raw = await read_body(request, SESSION_BODY_MAX, state.config.body_timeout)
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None
    token = body.get("token") if isinstance(body, dict) else None
    return token if isinstance(token, str) and token else None
