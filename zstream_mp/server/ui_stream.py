"""The page's own SSE stream: the API's frames, renamed for `EventSource` and timed.

ZenML's wire carries no time, and its stream must stay byte-identical, so only this stream
adds one: each event's JSON gains `"received_at"` (epoch seconds the server appended it,
from the broker: the Redis id's milliseconds, or the memory broker's batch stamp), and a
`clock` frame (`{"now": ...}`) opens the stream and stands in for each heartbeat, so
the page can tell events that arrived while it watched from the replay of older ones, and
show elapsed time on the server's clock.

Every event arrives as an SSE `message` (its kind is in the JSON), because an
`EventSource` only delivers the event names it has listeners for and kinds are open
ended; `gap`, `end` and `cursor` keep their names.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from zstream_mp._wire import RESERVED_KINDS

RECONNECT_MS = 1000
_CONTROL = frozenset(k.encode() for k in RESERVED_KINDS)
_PING = b": ping\n\n"

Stamp = Callable[[str], "float | None"]
"""An entry id's receive time, or None when the broker no longer knows it."""


def clock_frame(now: float | None = None) -> bytes:
    return b"event: clock\ndata: " + json.dumps({"now": now or time.time()}).encode() + b"\n\n"


def _timed(frame: bytes, stamp: Stamp) -> bytes:
    """Add `"received_at"` as the last key of an event frame's JSON object."""
    if not frame.startswith(b"id: ") or not frame.endswith(b"}\n\n"):
        return frame
    entry_id = frame[4 : frame.index(b"\n")].decode("ascii", "replace")
    received = stamp(entry_id)
    if received is None:
        return frame
    return frame[:-3] + b',"received_at":' + repr(round(received, 3)).encode() + b"}\n\n"


def as_page_frame(frame: bytes, stamp: Stamp) -> bytes:
    """Rename an event frame's `event:` line to `message` and time it; control frames
    keep their names; a heartbeat becomes a `clock` frame."""
    if frame == _PING:
        return clock_frame()
    head, sep, rest = frame.partition(b"event: ")
    if not sep:
        return frame
    name, nl, tail = rest.partition(b"\n")
    if name in _CONTROL:
        return frame
    return _timed(head + b"event: message" + nl + tail, stamp)


async def page_frames(body: AsyncIterable[Any], stamp: Stamp) -> AsyncIterator[bytes]:
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    yield clock_frame()
    async for chunk in body:
        data = chunk if isinstance(chunk, bytes) else str(chunk).encode()
        yield as_page_frame(data, stamp)
