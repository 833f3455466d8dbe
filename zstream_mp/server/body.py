"""Reading a request body: bounded in bytes, time and parse cost, parsed as FastAPI would.

Three bounds, each checked before the next step: bytes (`limit`, also enforced while a
chunked body streams in), time (`timeout` for the whole body, so a client trickling a byte
a second cannot hold a buffer for ever) and parse cost (`containers`: `[` and `{` bytes,
an upper bound on the lists and dicts `json.loads` would build; each costs ~64 bytes and
~0.6 µs, so a 69 MB `[[],[],…]` body would otherwise take 1.8 GB and seconds of the loop).
"""

from __future__ import annotations

import email.message
import functools
import json
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from zstream_mp.server.zenml_errors import detail_response, validation_error

__all__ = ["declared_too_large", "json_body", "parsed_body", "read_body", "refusal"]


class _Refused(Exception):
    """A body this module will not read or parse; `response` is the answer for it."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def refusal(exc: BaseException) -> Response | None:
    """The answer for a body `read_body()` or `json_body()` refused, else None."""
    return exc.response if isinstance(exc, _Refused) else None


def _too_large() -> _Refused:
    return _Refused(Response(status_code=413))


def declared_too_large(request: Request, limit: int) -> bool:
    """`Content-Length` says more than `limit` (checked before reading a byte)."""
    value = request.headers.get("content-length")
    try:
        return value is not None and int(value) > limit
    except ValueError:
        return False


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, refused as soon as more than `limit` bytes have arrived, or when it
    has not all arrived `timeout` seconds after the first read."""
    if declared_too_large(request, limit):
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large()
                chunks.append(chunk)
    except TimeoutError:
        raise _Refused(detail_response(408, "The request body did not arrive in time.")) from None
    return b"".join(chunks)


async def json_body(
    request: Request,
    limit: int,
    context: str,
    *,
    timeout: float | None = None,
    containers: int | None = None,
) -> Any:
    """The body as FastAPI hands it to validation: parsed JSON, raw bytes, or None.

    `containers` bounds the parse (see the module docstring): above it a 413.
    """
    raw = await read_body(request, limit, timeout)
    return parsed_body(request, raw, context, containers)


def _is_json_type(content_type: str) -> bool:
    """`application/json` or `application/*+json`, parameters allowed (as FastAPI reads it)."""
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


_is_json_type_seen = functools.lru_cache(maxsize=32)(_is_json_type)
"""The answer for the few short content types a server sees, kept (parsing one costs ~2 µs)."""


def parsed_body(request: Request, raw: bytes, context: str, containers: int | None) -> Any:
    """`raw` (read by `read_body`) as `json_body` answers it: parsed JSON when the request
    says it is JSON, else the bytes; None for an empty body."""
    if not raw:
        return None
    content_type = request.headers.get("content-type")
    if not content_type:
        return raw
    known = _is_json_type_seen if len(content_type) <= 128 else _is_json_type
    if not known(content_type):
        return raw
    if containers is not None and raw.count(b"[") + raw.count(b"{") > containers:
        too_many = f"Request body holds more than {containers} JSON arrays and objects."
        raise _Refused(detail_response(413, too_many))
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise _Refused(validation_error([error], context)) from exc
    except Exception as exc:  # bad UTF-8, nesting too deep, ...
        raise _Refused(detail_response(400, "There was an error parsing the body")) from exc
