"""The live page's files: plain HTML, JS and CSS from `server/static` (shipped in the wheel;
no build step, no CDN), read once and served with headers that keep the page to itself."""

from __future__ import annotations

from importlib import resources

from starlette.responses import JSONResponse, Response

__all__ = ["PAGE_HEADERS", "asset_response", "load_assets"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Sent with every file of the page: no outside sources, no framing, no referrer."""


def load_assets() -> dict[str, bytes]:
    """Every file of `static/` by name (the directory is small)."""
    folder = resources.files("zstream_mp.server").joinpath("static")
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and any(item.name.endswith(s) for s in _TYPES)
    }


def asset_response(assets: dict[str, bytes], name: str) -> Response:
    """The file `name` with its type and the page's headers, else a 404."""
    body = assets.get(name)
    if body is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    suffix = name[name.rfind(".") :]
    return Response(body, media_type=_TYPES[suffix], headers=PAGE_HEADERS)
