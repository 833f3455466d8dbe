"""Reading Server-Sent Events raw in tests: the whole body, and its frames."""

from __future__ import annotations

from typing import Any

import httpx


def sse_body(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: Any = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """GET an SSE stream and read until the server closes it (fails on `timeout`)."""
    with httpx.stream(
        "GET", url, headers=headers, params=params, timeout=httpx.Timeout(timeout)
    ) as resp:
        body = resp.read()
        return resp.status_code, dict(resp.headers), body


def frames_of(body: bytes) -> list[dict[str, str]]:
    """Split raw SSE bytes into frames: {'id'?, 'event', 'data'} or {'comment': ...}."""
    out: list[dict[str, str]] = []
    for block in body.decode("utf-8").split("\n\n"):
        if not block:
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                frame[name] = value
        out.append(frame)
    return out
