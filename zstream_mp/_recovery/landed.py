"""Did a batch that was in flight when its sender stopped reach the server? Ask the stream.

A server that deduplicates on the Idempotency-Key (ours) makes resending such a batch
harmless; ZenML's does not, and would append it twice. So before a deliverer resends the
batch recorded as in flight, it reads the run's stream and resends only the events of the
batch that are not there. An event is recognised by its kind, correlation id, index and
payload. When the stream cannot be read (no read permission, no server), the answer is
"unknown" and the batch is resent under its key.

Budget. The replay of one run is read once per pass (`History`) and shared by every
spool of that run the pass checks; it ends at the first `QUIET` seconds of silence. A
batch sent less than `SETTLE` seconds ago may still be on its way into the server: the
check waits for that moment when the deliverer's deadline allows, and otherwise answers
`NOT_YET` so the deliverer leaves the spool for a later attempt instead of guessing.

The deliverer runs in a background thread of a process that may fork at any moment, so its
client is built like the sender's (`_transport.build_client`) and logs nothing per request.
"""

from __future__ import annotations

import enum
import json
import time
from typing import Any

import httpx

from zstream_mp import _quiet, _transport
from zstream_mp._wire import AUTHORIZATION, bearer, stream_url

QUIET = 0.5
"""Seconds of silence that end the replay of the stream's history."""
SETTLE = 5.0
"""Seconds after a batch was sent before its absence from the stream is believed: a loaded
ZenML server was seen storing a batch more than a second after its sender had died."""
REPLAY_BUDGET = 10.0
"""Seconds one replay may take at most."""


class _NotYet(enum.Enum):
    NOT_YET = "not yet"


NOT_YET = _NotYet.NOT_YET
"""Too early to tell, or no time left to look: ask again later."""


def signature(event: dict[str, Any]) -> str:
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


class History:
    """The replayed streams of one delivery pass, by (server, run)."""

    def __init__(self, http_transport: httpx.BaseTransport | None = None) -> None:
        self._http_transport = http_transport
        self._seen: dict[tuple[str, str], tuple[float, set[str] | None]] = {}
        """(wall time the replay started, what it held) by (server, run)."""

    def missing(
        self,
        server: str,
        run_id: str,
        token: str | None,
        events: list[bytes],
        sent_at: float,
        deadline: float,
    ) -> list[bytes] | _NotYet | None:
        """The events of `events` the run's stream lacks; None when it cannot tell."""
        wait = sent_at + SETTLE - time.time()
        if wait > 0:
            if time.monotonic() + wait + QUIET >= deadline:
                return NOT_YET
            time.sleep(wait)
        key = (server, run_id)
        cached = self._seen.get(key)
        if cached is None or cached[0] < sent_at + SETTLE:  # none, or read too early for this one
            budget = min(REPLAY_BUDGET, deadline - time.monotonic())
            if budget <= QUIET:
                return NOT_YET
            started = time.time()
            found = replay(server, run_id, token, budget, self._http_transport)
            if found is NOT_YET:
                return NOT_YET
            cached = self._seen[key] = (started, found)
        seen = cached[1]
        if seen is None:
            return None
        out: list[bytes] = []
        for raw in events:
            try:
                sig = signature(json.loads(raw))
            except ValueError:
                return None
            if sig not in seen:
                out.append(raw)
        return out


def replay(
    server: str,
    run_id: str,
    token: str | None,
    budget: float,
    http_transport: httpx.BaseTransport | None = None,
) -> set[str] | _NotYet | None:
    """Signatures of every event the run's stream replays; None when it cannot be read,
    `NOT_YET` when the budget ended before the replay did."""
    headers = {"Accept": "text/event-stream"}
    if token:
        headers[AUTHORIZATION] = bearer(token)
    end = time.monotonic() + budget
    # The answer's head may be slow on a loaded server: only silence *between* frames ends
    # the history, so the head gets the whole budget and the body the quiet window.
    timeout = httpx.Timeout(budget)
    seen: set[str] = set()
    try:
        with (
            _transport.build_client(server, timeout, http_transport=http_transport) as client,
            _quiet.requests(),
            client.stream("GET", stream_url(server, run_id), headers=headers) as r,
        ):
            if r.status_code >= 300:
                return None
            _quiet_between_frames(r, QUIET)
            data: list[bytes] = []
            for line in r.iter_lines():
                if time.monotonic() > end:
                    return NOT_YET
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" ").encode())
                elif not line and data:
                    _add(b"\n".join(data), seen)
                    data = []
    except httpx.ReadTimeout:
        pass  # silence after the head: the history has been replayed
    except (httpx.HTTPError, UnicodeDecodeError):
        return None
    return seen


def _quiet_between_frames(response: httpx.Response, quiet: float) -> None:
    """Make each read of the body wait at most `quiet` seconds (the head had the budget).

    The transport reads the request's timeout table when the body is first read, so setting
    it now applies to the body only.
    """
    table = response.request.extensions.get("timeout")
    if isinstance(table, dict):
        table["read"] = quiet


def _add(data: bytes, seen: set[str]) -> None:
    try:
        event = json.loads(data)
    except ValueError:
        return
    if isinstance(event, dict):
        seen.add(signature(event))
