"""A mock ZenML-compatible server behind `httpx.MockTransport`, for unit tests: it stores
what it is sent and replays it as the run's stream."""

from __future__ import annotations

import json
from typing import Any

import httpx

from zstream_mp._transport import Transport
from zstream_mp._wire import IDEMPOTENT_REPLAYED

SERVER = "http://127.0.0.1:9"
"""A port nothing listens on: every request goes to a mock transport instead."""


def event_bytes(seq: int, run_id: str = "", kind: str = "event") -> bytes:
    """An event as `publish()` encodes it (the fields the stream replays)."""
    return json.dumps(
        {"pipeline_run_id": run_id, "kind": kind, "payload": {"seq": seq}},
        separators=(",", ":"),
    ).encode()


class StoringServer:
    """A mock server that stores every POST (no deduplication unless told) and replays what
    it stored as the run's stream. `status` answers POSTs; `stream_status` the stream."""

    def __init__(self, status: int = 200, deduplicates: bool = False) -> None:
        self.status = status
        self.stream_status = 200
        self.deduplicates = deduplicates
        self.stored: list[dict[str, Any]] = []
        self.posts: list[httpx.Request] = []
        self.streams: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.streams.append(request)
            if self.stream_status != 200:
                return httpx.Response(self.stream_status, json={"detail": "no"})
            body = "".join(f"id: {i}\ndata: {json.dumps(e)}\n\n" for i, e in enumerate(self.stored))
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        self.posts.append(request)
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "no"})
        events = json.loads(request.content)["events"]
        self.stored.extend(events)
        headers = {IDEMPOTENT_REPLAYED: "false"} if self.deduplicates else {}
        return httpx.Response(200, json={"count": len(events)}, headers=headers)

    def seqs(self) -> list[int]:
        return [int(e["payload"]["seq"]) for e in self.stored]

    def transport(self) -> Transport:
        """A sender transport whose requests come here (no retries: one answer decides)."""
        return Transport(5.0, 0.0, http_transport=httpx.MockTransport(self))
