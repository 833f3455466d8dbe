"""`server.body`: a body refused for its size, parse cost or shape becomes the answer
`refusal()` gives, never an exception that escapes (over ASGI in-process)."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zstream_mp.server.body import json_body, refusal


async def _endpoint(request: Request) -> Response:
    try:
        body = await json_body(request, 64, "POST /x", timeout=5.0, containers=4)
    except Exception as exc:
        refused = refusal(exc)
        assert refused is not None, exc
        return refused
    return JSONResponse({"body": body})


def _post(content: bytes, content_type: str = "application/json") -> httpx.Response:
    app = Starlette(routes=[Route("/x", _endpoint, methods=["POST"])])

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            return await client.post("/x", content=content, headers={"content-type": content_type})

    return asyncio.run(run())


def test_a_small_json_body_is_parsed() -> None:
    assert _post(b'{"a": [1]}').json() == {"body": {"a": [1]}}


def test_refusals() -> None:
    assert _post(b"x" * 65).status_code == 413
    too_many = _post(b"[[[[[[]]]]]]")
    assert too_many.status_code == 413 and "JSON arrays and objects" in too_many.text
    broken = _post(b'{"a": ')  # ZenML's 422: a ValueError naming the decode error
    assert broken.status_code == 422 and "json_invalid" in broken.text


def test_refusal_is_none_for_other_errors() -> None:
    assert refusal(ValueError("not a body problem")) is None
