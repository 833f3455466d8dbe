"""SSE frames byte for byte as ZenML 0.98.0 writes them (`sse.py`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from zstream_mp.server.broadcaster import (
    SubscriberEnd,
    SubscriberEntry,
    SubscriberGap,
    SubscriberItem,
)
from zstream_mp.server.models import EndFrame, UnknownFrame

PING = b": ping\n\n"
END = b"event: end\ndata: {}\n\n"


def format_frame(event: str, data: str, event_id: str | None = None) -> bytes:
    """`id:` (only with an id), `event:`, one `data:` line, blank line; rejects newlines."""
    for value in (event, data, event_id or ""):
        if "\n" in value or "\r" in value:
            raise ValueError("SSE field contains a newline")
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def gap_frame(reason: str) -> bytes:
    """`gap` with Python `json.dumps` spacing, as ZenML sends it."""
    return format_frame("gap", json.dumps({"reason": reason}))


def cursor_frame(event_id: str, unknown_type: str | None = None) -> bytes:
    """Advances the client's Last-Event-ID without delivering anything."""
    data = json.dumps({"unknown_type": unknown_type}) if unknown_type else "{}"
    return format_frame("cursor", data, event_id)


@dataclass(frozen=True)
class EventFilter:
    """Repeatable query filters: values of one parameter OR, parameters AND; null never matches."""

    kinds: frozenset[str] | None = None
    step_names: frozenset[str] | None = None
    correlation_ids: frozenset[str] | None = None

    @classmethod
    def of(
        cls, kinds: Sequence[str], step_names: Sequence[str], correlation_ids: Sequence[str]
    ) -> EventFilter:
        return cls(
            frozenset(kinds) if kinds else None,
            frozenset(step_names) if step_names else None,
            frozenset(correlation_ids) if correlation_ids else None,
        )

    def matches(self, kind: str, step_name: str | None, correlation_id: str | None) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.step_names is not None and step_name not in self.step_names:
            return False
        return self.correlation_ids is None or correlation_id in self.correlation_ids


def frame_for(item: SubscriberItem, event_filter: EventFilter) -> tuple[bytes, bool]:
    """Encode one item; the flag says the stream ends after this frame."""
    if isinstance(item, SubscriberEnd):
        return END, True
    if isinstance(item, SubscriberGap):
        return gap_frame(item.reason), False
    assert isinstance(item, SubscriberEntry)
    frame = item.frame
    if isinstance(frame, EndFrame):
        return END, True
    if isinstance(frame, UnknownFrame):
        return cursor_frame(item.id, unknown_type=frame.type), False
    event = frame.event
    if item.data is None or not event_filter.matches(
        event.kind, event.step_name, event.correlation_id
    ):
        return cursor_frame(item.id), False
    try:
        return format_frame(event.kind, item.data, item.id), False
    except ValueError:
        return cursor_frame(item.id), False
