"""SSE line splitting: only CRLF, LF and CR end a line, however the bytes are chunked."""

from __future__ import annotations

import uuid

import httpx
import pytest

import zstream_mp
from zstream_mp.consumer import _lines

TRICKY = "a\u2028b\u2029c\x85d\x1ce\x1df\x1eg\x0bh\x0ci"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_lines_split_only_on_sse_line_ends(chunk: int, eol: bytes) -> None:
    text = f"data: {TRICKY}".encode()
    stream = eol.join([b"id: 1", b"event: x", text, b"", b": ping", b""]) + eol
    pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    assert list(_lines(pieces)) == ["id: 1", "event: x", f"data: {TRICKY}", "", ": ping", ""]


def test_payload_with_unicode_line_separators_round_trips(server: object) -> None:
    url = server.url  # type: ignore[attr-defined]
    run_id = str(uuid.uuid4())
    payload = {"text": TRICKY, "n": 1}
    with zstream_mp.bind(run_id, server=url):
        zstream_mp.publish(payload, kind="tricky")
        zstream_mp.publish({"n": 2}, kind="plain")
        assert zstream_mp.flush(10)
    httpx.post(f"{url}/api/v1/zstream/runs/{run_id}/end").raise_for_status()
    events = [
        e
        for e in zstream_mp.subscribe(url, run_id, timeout=20)
        if isinstance(e, zstream_mp.consumer.Event)
    ]
    assert [e.kind for e in events] == ["tricky", "plain"]
    assert dict(events[0].payload) == payload
