"""Validate one event and encode it, once, into the compact JSON bytes that are sent.

The bytes checked against the size limits are the bytes in the request body: a batch body
is a join of these, never a re-encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from zstream_mp._encode import ENCODERS, ORJSON, Encoder, Orjson, encode_fast, encode_stdlib
from zstream_mp._wire import (
    ENVELOPE_BYTES_MAX,
    ENVELOPE_OVERHEAD,
    PAYLOAD_BYTES_MAX,
    RESERVED_KINDS,
)
from zstream_mp.errors import InvalidEventError, PayloadTooLargeError, ReservedKindError

encode_json: Encoder = encode_fast or encode_stdlib
"""The payload encoder `publish()` uses: orjson's when the `fast` extra is installed."""
fast: Orjson | None = ORJSON
"""orjson, when `encode_json` is its encoder: `publish()` calls its `dumps` itself."""


def use_encoder(name: str) -> None:
    """Make `publish()` use encoder `name` (`stdlib`, or `orjson` when installed)."""
    global encode_json, fast
    encode_json = ENCODERS[name]
    fast = ORJSON if name == "orjson" else None


known_kinds: dict[str, bytes] = {}
"""Kinds already checked, to their encoded bytes (at most 1,024: a bounded cache)."""
NO_CORRELATION_TAIL = b'null,"index":null,"payload":'
"""`encode_tail(None, None)`: the tail of most events, built once."""


def check_kind(kind: Any) -> bytes:
    """The kind's JSON bytes followed by the next key, or a typed error."""
    cached = known_kinds.get(kind) if type(kind) is str else None
    if cached is not None:
        return cached
    if not isinstance(kind, str):
        raise InvalidEventError(f"kind must be a str, not {type(kind).__name__}")
    if kind in RESERVED_KINDS:
        raise ReservedKindError(
            f"`{kind}` is reserved for server-emitted control frames ({sorted(RESERVED_KINDS)})"
        )
    if not kind or "\n" in kind or "\r" in kind:
        raise InvalidEventError(
            f"kind must be a non-empty, single-line str (the SSE `event:` field), got {kind[:80]!r}"
        )
    try:
        encoded = (encode_basestring(kind) + ',"correlation_id":').encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEventError(f"kind is not valid UTF-8 text: {exc}") from exc
    if len(known_kinds) < 1024:
        known_kinds[kind] = encoded
    return encoded


def encode_payload(payload: Any) -> bytes:
    """The payload as compact UTF-8 JSON, at most 65,536 bytes (rules: `_encode`)."""
    if type(payload) is not dict:
        if not isinstance(payload, Mapping):
            raise InvalidEventError(f"payload must be a dict, not {type(payload).__name__}")
        payload = dict(payload)
    return check_payload_size(encode_json(payload))


def check_payload_size(encoded: bytes) -> bytes:
    """`encoded`, or PayloadTooLargeError when it is over 65,536 bytes."""
    if len(encoded) > PAYLOAD_BYTES_MAX:
        raise PayloadTooLargeError(
            f"Payload encoded size ({len(encoded)} bytes) exceeds the maximum of "
            f"{PAYLOAD_BYTES_MAX} bytes."
        )
    return encoded


def encode_tail(correlation_id: Any, index: Any) -> bytes:
    """`<correlation_id>,"index":<index>,"payload":` with both values checked."""
    if correlation_id is None and index is None:
        return NO_CORRELATION_TAIL
    if correlation_id is None:
        cid = "null"
    elif isinstance(correlation_id, str):
        cid = encode_basestring(correlation_id)
    else:
        raise InvalidEventError(
            f"correlation_id must be a str or None, not {type(correlation_id).__name__}"
        )
    if index is None:
        idx = "null"
    elif type(index) is int or (isinstance(index, int) and not isinstance(index, bool)):
        idx = int.__repr__(index)
    else:
        raise InvalidEventError(f"index must be an int or None, not {type(index).__name__}")
    try:
        return f'{cid},"index":{idx},"payload":'.encode()
    except UnicodeEncodeError as exc:
        raise InvalidEventError(f"correlation_id is not valid UTF-8 text: {exc}") from exc


def assemble(prefix: bytes, kind: bytes, tail: bytes, payload: bytes) -> bytes:
    """The full 7-field event; raises if its broker envelope would exceed 69,632 bytes."""
    return check_event_size(b"".join((prefix, kind, tail, payload, b"}")))


def check_event_size(event: bytes) -> bytes:
    """`event`, or PayloadTooLargeError when its broker envelope is over 69,632 bytes."""
    size = len(event) + ENVELOPE_OVERHEAD
    if size > ENVELOPE_BYTES_MAX:
        raise PayloadTooLargeError(
            f"Event envelope ({size} bytes) exceeds the server's maximum of "
            f"{ENVELOPE_BYTES_MAX} bytes; shorten the kind, correlation_id or payload."
        )
    return event
