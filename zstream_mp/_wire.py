"""ZenML 0.98.0's streaming wire contract, spelled out once.

Everything a publisher, a consumer, the server and the CLI must agree on lives here: the
event limits, the reserved kinds, the URL paths, the header names, the environment
variables, how `Retry-After` is read and how ZenML writes an error's `detail`. Other
modules import these names; no other module spells a limit, path, header or environment
name of the contract as a literal (a test greps the package for them).

A leaf: it imports nothing from the package.
"""

from __future__ import annotations

import json
from typing import Any

# --------------------------------------------------------------------------- limits

PAYLOAD_BYTES_MAX = 64 * 1024
"""ZenML's `STREAM_EVENT_PAYLOAD_BYTES_MAX`: the payload's compact JSON, in bytes."""
ENVELOPE_BYTES_MAX = PAYLOAD_BYTES_MAX + 4 * 1024
"""69,632: the broker frame `{"type":"event","event":{...}}`; larger is refused with 413."""
ENVELOPE_OVERHEAD = len(b'{"type":"event","event":}')
"""What the broker frame adds around one encoded event."""
MAX_BATCH_SIZE = 1000
"""Events in one POST; the server answers 422 above it."""
DEFAULT_BATCH_SIZE = 64
"""ZenML's publisher batch size (`ZENML_STREAM_PUBLISHER_BATCH_SIZE`)."""
QUEUE_MAXSIZE = 4096
"""Events one process may hold before the oldest is dropped (as ZenML's publisher)."""
RESERVED_KINDS = frozenset({"end", "gap", "error", "cursor", "system"})
"""Kinds the server keeps for its own control frames; publishing one is refused (400)."""
BATCH_BODY_MAX = 1 + MAX_BATCH_SIZE * (ENVELOPE_BYTES_MAX + 1) + 4096
"""The largest request body a valid batch can need: 1,000 events at the envelope limit,
their separators and the `{"events":[...]}` framing, with room for whitespace."""
RUN_BODY_MAX = 64 * 1024
"""Our server only: the body of `POST /api/v1/zstream/runs` (`{"id": ...}`)."""
IDEMPOTENCY_KEY_MAX = 255
"""Our server only: longest `Idempotency-Key` accepted (the publisher sends a UUID)."""
CURSOR_MAX = 41
"""Longest cursor any broker accepts (Redis `<20 digits>-<20 digits>`)."""

# --------------------------------------------------------------------------- paths

EVENTS_PATH = "/api/v1/runs/{run_id}/events"
"""POST a batch of events."""
STREAM_PATH = "/api/v1/runs/{run_id}/events/stream"
"""GET the run's events as Server-Sent Events."""
RUNS_PATH = "/api/v1/zstream/runs"
"""Our server only: create (POST) and list (GET) runs."""
RUN_PATH = "/api/v1/zstream/runs/{run_id}"
"""Our server only: a run's status."""
RUN_END_PATH = "/api/v1/zstream/runs/{run_id}/end"
"""Our server only: end a run's stream."""
ZENML_INFO_PATH = "/api/v1/info"
"""A ZenML server's version and deployment; `serve` probes it on a busy port."""
HEALTH_PATH = "/health"
"""Liveness: 200 while the process answers."""
READY_PATH = "/ready"
"""Our server only: readiness, 200 when the broker answers, else 503 (for load balancers)."""
DEFAULT_PORT = 8237
"""The port `zstream-mp serve` listens on by default (ZenML's local server port)."""
DEFAULT_SERVER = f"http://127.0.0.1:{DEFAULT_PORT}"
"""Where `tail` and `runs` look when neither `--server` nor `ZSTREAM_SERVER` is set."""


def events_url(server: str, run_id: str) -> str:
    return server + EVENTS_PATH.format(run_id=run_id)


def stream_url(server: str, run_id: str) -> str:
    return server + STREAM_PATH.format(run_id=run_id)


def runs_url(server: str) -> str:
    return server + RUNS_PATH


def run_url(server: str, run_id: str) -> str:
    return server + RUN_PATH.format(run_id=run_id)


def run_end_url(server: str, run_id: str) -> str:
    return server + RUN_END_PATH.format(run_id=run_id)


# --------------------------------------------------------------------------- headers

AUTHORIZATION = "Authorization"
IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"
"""Beyond ZenML: our server's answer to a keyed POST says whether it replayed a stored
answer (`true`) or stored the batch now (`false`). A publisher that sees it knows the
server deduplicates, so a batch whose fate is unknown can be resent without a check."""
LAST_EVENT_ID = "Last-Event-ID"
RETRY_AFTER = "Retry-After"
BROKER_RETRY_AFTER = "5"
"""What ZenML answers in `Retry-After` with a 503 when its broker is down."""


def bearer(token: str) -> str:
    return f"Bearer {token}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds only), or None."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


# --------------------------------------------------------------------------- errors


def error_detail(exc_type: str, message: str) -> list[str]:
    """ZenML's `detail` for a handled exception: `["ExcType", "message"]`."""
    return [exc_type, message]


def detail_of(body: bytes) -> Any:
    """ZenML's `detail` from an error answer's body (or its start): the whole body when it
    has no `detail`, its first 500 characters when it is not JSON."""
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return body[:500].decode("utf-8", "replace")
    return parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed


def describe_failure(exc: BaseException) -> str:
    """`Type: message` of a request that failed (the type alone when there is no message)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_detail(detail: Any) -> str:
    """One line from any of ZenML's `detail` shapes (string, `[type, message]`, other)."""
    if isinstance(detail, list) and len(detail) == 2 and all(isinstance(d, str) for d in detail):
        return f"{detail[0]}: {detail[1]}"
    if isinstance(detail, str):
        return detail
    return json.dumps(detail)


# --------------------------------------------------------------------------- environment

ENV_CONTEXT = "ZSTREAM_CONTEXT"
"""The handoff a parent process leaves its children (see `_handoff`)."""
ENV_SERVER = "ZSTREAM_SERVER"
ENV_TOKEN = "ZSTREAM_TOKEN"
ENV_BATCH_SIZE = "ZENML_STREAM_PUBLISHER_BATCH_SIZE"
ENV_EXIT_TIMEOUT = "ZSTREAM_EXIT_TIMEOUT"
ENV_IDLE_EXIT = "ZSTREAM_IDLE_EXIT"
ENV_RETRY_DEADLINE = "ZSTREAM_RETRY_DEADLINE"
ENV_REQUEST_TIMEOUT = "ZSTREAM_REQUEST_TIMEOUT"
ENV_STATE_DIR = "ZSTREAM_STATE_DIR"
ENV_DURABLE = "ZSTREAM_DURABLE"
ENV_SPOOL_MAX_BYTES = "ZSTREAM_SPOOL_MAX_BYTES"
ENV_REGISTRY = "ZSTREAM_REGISTRY"
ENV_SERVE_TOKEN = "ZSTREAM_SERVE_TOKEN"


def batch_body(events: list[bytes]) -> bytes:
    """The body of one POST: the events' bytes exactly as encoded, copied once into it
    (framing and separators are slots of the same join, not concatenations after it)."""
    if not events:
        return b'{"events":[]}'
    parts = [b","] * (2 * len(events) + 1)
    parts[0] = b'{"events":['
    parts[1::2] = events
    parts[-1] = b"]}"
    return b"".join(parts)
