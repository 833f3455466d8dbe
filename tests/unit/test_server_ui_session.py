"""`server.ui_session` and `server.ui_assets`: the page's cookie login and its files, over
ASGI in-process (`httpx.ASGITransport`)."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zstream_mp.server.auth import TokenAuth
from zstream_mp.server.ui_assets import PAGE_HEADERS, asset_response, load_assets
from zstream_mp.server.ui_session import API_PREFIX, COOKIE, SESSION_BODY_MAX, session, with_cookie

READER, WRITER = "reader-token-0123456789", "writer-token-0123456789"


async def _echo_auth(request: Request) -> Response:
    return JSONResponse({"authorization": request.headers.get("authorization")})


def _app(tokens: dict[str, set[str]]) -> Starlette:
    state: Any = types.SimpleNamespace(
        auth=TokenAuth(tokens), config=types.SimpleNamespace(body_timeout=5.0)
    )
    return Starlette(
        routes=[
            Route("/ui/session", session(state), methods=["GET", "POST", "DELETE"]),
            Route(API_PREFIX + "echo", with_cookie(_echo_auth), methods=["GET", "POST"]),
        ]
    )


def _calls(app: Starlette, *calls: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
            return [await client.request(m, url, **kw) for m, url, kw in calls]

    return asyncio.run(run())


def test_a_read_token_becomes_a_cookie_the_api_gets_as_its_header() -> None:
    app = _app({READER: {"read"}})
    login, state, echo, post = _calls(
        app,
        ("POST", "/ui/session", {"json": {"token": READER}}),
        ("GET", "/ui/session", {"headers": {"cookie": f"{COOKIE}=x"}}),
        ("GET", API_PREFIX + "echo", {}),
        ("POST", API_PREFIX + "echo", {}),
    )
    assert login.status_code == 204
    cookie = login.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and f"Path={API_PREFIX}" in cookie
    assert state.json() == {"auth": True, "cookie": True}
    assert echo.json() == {"authorization": f"Bearer {READER}"}
    assert post.json() == {"authorization": None}  # a cross-site form cannot write with it


def test_login_refusals() -> None:
    app = _app({WRITER: {"write"}})
    answers = _calls(
        app,
        ("POST", "/ui/session", {"content": b"token=x"}),
        ("POST", "/ui/session", {"json": {"nope": 1}}),
        ("POST", "/ui/session", {"json": {"token": "unknown-token"}}),
        ("POST", "/ui/session", {"json": {"token": WRITER}}),
    )
    assert [a.status_code for a in answers] == [415, 422, 401, 403]


def test_logout_clears_the_cookie() -> None:
    (answer,) = _calls(_app({READER: {"read"}}), ("DELETE", "/ui/session", {}))
    assert answer.status_code == 204 and f"{COOKIE}=" in answer.headers["set-cookie"]


def test_the_login_body_is_small() -> None:
    assert SESSION_BODY_MAX <= 4096


def test_the_pages_files_carry_their_type_and_the_page_headers() -> None:
    assets = load_assets()
    assert "index.html" in assets and "run.html" in assets
    page = asset_response(assets, "index.html")
    assert page.media_type == "text/html; charset=utf-8"
    assert all(page.headers[k] == v for k, v in PAGE_HEADERS.items())
    assert asset_response(assets, "missing.js").status_code == 404
