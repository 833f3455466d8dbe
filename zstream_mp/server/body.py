"""Reading a request body: bounded by a byte limit, parsed as FastAPI hands it to validation."""

from __future__ import annotations

import email.message
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from zstream_mp.server.zenml_errors import detail_response, validation_error


class BodyTooLarge(Exception):
    """The body grew past the limit while streaming in."""


class BodyParseError(Exception):
    """The body is not what the endpoint can validate; `response` is ZenML's answer."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing it as soon as more than `limit` bytes have arrived."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, limit: int, context: str) -> Any:
    """The body as FastAPI hands it to validation: parsed JSON, raw bytes, or None."""
    raw = await read_body(request, limit)
    if not raw:
        return None
    content_type = request.headers.get("content-type")
    if not content_type:
        return raw
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return raw
    subtype = message.get_content_subtype()
    if not (subtype == "json" or subtype.endswith("+json")):
        return raw
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
        raise BodyParseError(validation_error([error], context)) from exc
    except Exception as exc:  # bad UTF-8, nesting too deep, ...
        raise BodyParseError(detail_response(400, "There was an error parsing the body")) from exc
