"""The broker envelope whose size the server limits (69,632 bytes), computed like the spec.

The server encodes `{"type":"event","event":{<all 7 StreamEvent fields>}}` as compact JSON
with raw UTF-8 and compares its length in bytes to 64 KiB + 4 KiB.
"""

from __future__ import annotations

import json
from typing import Any

ENVELOPE_MAX = 65536 + 4096
FIELDS = (
    "pipeline_run_id",
    "step_run_id",
    "step_name",
    "kind",
    "correlation_id",
    "index",
    "payload",
)


def envelope_bytes(event: dict[str, Any]) -> bytes:
    full = {k: event.get(k, {} if k == "payload" else None) for k in FIELDS}
    full["pipeline_run_id"] = str(full["pipeline_run_id"]).lower()
    return json.dumps(
        {"type": "event", "event": full}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def event_with_envelope(
    run_id: str, size: int, *, kind: str = "big", multibyte: bool = False
) -> dict[str, Any]:
    """An event whose envelope is exactly `size` bytes (payload `{"blob": ...}`)."""
    base = {"pipeline_run_id": run_id, "kind": kind, "payload": {"blob": ""}}
    room = size - len(envelope_bytes(base))
    if room < 0:
        raise ValueError(f"size {size} below the empty envelope")
    if multibyte:
        # "é" is 2 bytes, "✓" 3 bytes, a newline escapes to 2 bytes: mix them, pad with "x"
        unit = "é✓\n"  # 2 + 3 + 2 = 7 bytes per unit
        blob = unit * (room // 7) + "x" * (room % 7)
    else:
        blob = "x" * room
    event = {"pipeline_run_id": run_id, "kind": kind, "payload": {"blob": blob}}
    assert len(envelope_bytes(event)) == size
    return event
