"""What a posted batch must satisfy beyond its model, with ZenML's answer for each miss.

The `Idempotency-Key`'s shape (400), and per event, in ZenML's order: the URL's run (400),
a reserved or multi-line kind (400), what UTF-8 cannot encode (422), the broker frame's size
(413). The accepted events come back encoded once, as the broker stores them.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

from starlette.responses import Response

from zstream_mp._wire import (
    ENVELOPE_BYTES_MAX,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_MAX,
    RESERVED_KINDS,
)
from zstream_mp.server.models import StreamBatchRequest, StreamEvent, encode_event_frame
from zstream_mp.server.zenml_errors import detail_response, exception_response

__all__ = ["bad_idempotency_key", "encoded_events", "event_refusal", "may_hold_lone_surrogates"]

_SURROGATE_SOURCE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""How a lone surrogate gets into a parsed body: a `\\uD800`-`\\uDFFF` escape, or the
bytes of one (`json.loads` decodes bytes with `surrogatepass`)."""


def may_hold_lone_surrogates(raw: bytes) -> bool:
    """Whether `json.loads(raw)` could hold a lone surrogate (False: it cannot, so the
    per-event check is skipped). One C-speed scan of the body; an escaped backslash before
    a `u` reads as a maybe, which only costs the check."""
    return _SURROGATE_SOURCE.search(raw) is not None


def bad_idempotency_key(key: str) -> str | None:
    """Why a client's `Idempotency-Key` is refused (400), or None when it is usable."""
    if len(key) > IDEMPOTENCY_KEY_MAX:
        return f"{IDEMPOTENCY_KEY} is longer than {IDEMPOTENCY_KEY_MAX} characters."
    if not (key.isascii() and key.isprintable()):
        return f"{IDEMPOTENCY_KEY} must be printable ASCII."
    return None


def encoded_events(
    batch: StreamBatchRequest, run_id: UUID, *, surrogates: bool = True
) -> list[bytes] | Response:
    """Every event's broker frame, or the refusal of the first event that fails a check.

    `surrogates=False` (the body cannot hold a lone surrogate, `may_hold_lone_surrogates`)
    skips the per-event payload scan for them."""
    payloads: list[bytes] = []
    for event in batch.events:
        refusal = event_refusal(event, run_id)
        if refusal is not None:
            return refusal
        try:
            payload = encode_event_frame(event)
            if surrogates:
                _refuse_lone_surrogates(event.payload)
        except ValueError as exc:  # lone surrogates: JSON allows them, UTF-8 does not
            # ZenML maps ValueError subclasses to its last ValueError entry: 422
            return exception_response(422, "ValueError", str(exc))
        if len(payload) > ENVELOPE_BYTES_MAX:
            return detail_response(
                413, f"Event exceeds {ENVELOPE_BYTES_MAX} bytes (was {len(payload)})."
            )
        payloads.append(payload)
    return payloads


def event_refusal(event: StreamEvent, run_id: UUID) -> Response | None:
    """ZenML's 400 for an event of another run or with a kind SSE cannot carry, else None."""
    if event.pipeline_run_id != run_id:
        return exception_response(
            400,
            "ValueError",
            f"Event pipeline_run_id {event.pipeline_run_id} does not match URL run id {run_id}.",
        )
    if event.kind in RESERVED_KINDS:
        return exception_response(
            400,
            "ValueError",
            f"Event kind {event.kind!r} collides with a reserved SSE "
            f"control name ({sorted(RESERVED_KINDS)})",
        )
    if "\n" in event.kind or "\r" in event.kind:
        # ZenML accepts it and then shows it only as a `cursor` frame
        return exception_response(
            400,
            "ValueError",
            f"Event kind {event.kind[:64]!r} contains a line break, which an SSE "
            "event name cannot carry.",
        )
    return None


def _refuse_lone_surrogates(payload: dict[str, Any]) -> None:
    """`ValueError` when a payload key holds a lone surrogate (`\\ud800`).

    pydantic refuses one in a value but writes one in a key as U+FFFD, so the stored event
    would differ from the published one; keys are refused as values are. One C-speed encode
    of the payload (already bounded by the body's size and parse cost).
    """
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "Event payload holds a lone surrogate (in a key or a value), which UTF-8 cannot encode."
        ) from None
    except (TypeError, ValueError):
        pass  # parsed from JSON, so always encodable; pydantic's encoder already took it
