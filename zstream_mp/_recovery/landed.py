"""Did a batch that was in flight when its sender died reach the server? Ask the stream.

A server that deduplicates on the Idempotency-Key (ours) makes resending such a batch
harmless; ZenML's does not, and would append it twice. So before an adopter resends the
batch recorded as in flight, it reads the run's stream and resends only the events of the
batch that are not there. An event is recognised by its kind, correlation id, index and
payload. When the stream cannot be read (no read permission, no server), the answer is
"unknown" and the batch is resent under its key.

The adopter runs in a background thread of a process that may fork at any moment, so its
client is built like the sender's (``_transport.build_client``) and logs nothing per request.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from zstream_mp import _quiet, _transport
from zstream_mp._wire import AUTHORIZATION, bearer, stream_url

QUIET = 1.0
"""Seconds of silence that end the replay of the stream's history."""


def _signature(event: dict[str, Any]) -> str:
    return json.dumps(
        [
            event.get("kind"),
            event.get("correlation_id"),
            event.get("index"),
            event.get("payload"),
        ],
        sort_keys=True,
        separators=(",", ":"),
    )


def missing(
    server: str, run_id: str, token: str | None, events: list[bytes], budget: float
) -> list[bytes] | None:
    """The events of ``events`` the run's stream does not hold; None when it cannot tell."""
    wanted: dict[str, list[bytes]] = {}
    for raw in events:
        try:
            wanted.setdefault(_signature(json.loads(raw)), []).append(raw)
        except ValueError:
            return None
    headers = {"Accept": "text/event-stream"}
    if token:
        headers[AUTHORIZATION] = bearer(token)
    timeout = httpx.Timeout(max(budget, QUIET), read=QUIET)
    found: set[str] = set()
    try:
        with (
            _transport.build_client(server, timeout) as client,
            _quiet.requests(),
            client.stream("GET", stream_url(server, run_id), headers=headers) as r,
        ):
            if r.status_code >= 300:
                return None
            data: list[str] = []
            buf = b""
            for chunk in r.iter_bytes():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode("utf-8").rstrip("\r")
                    if text.startswith("data:"):
                        data.append(text[5:].lstrip(" "))
                    elif not text and data:
                        _match("\n".join(data), wanted, found)
                        data = []
                        if len(found) == len(wanted):
                            return []
    except httpx.ReadTimeout:
        pass  # silence: the history has been replayed
    except (httpx.HTTPError, UnicodeDecodeError):
        return None
    return [raw for sig, raws in wanted.items() if sig not in found for raw in raws]


def _match(data: str, wanted: dict[str, list[bytes]], found: set[str]) -> None:
    try:
        event = json.loads(data)
    except ValueError:
        return
    if isinstance(event, dict):
        sig = _signature(event)
        if sig in wanted:
            found.add(sig)
