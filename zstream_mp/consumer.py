"""`subscribe()`: read a run's live stream from ZenML's SSE endpoint (or this project's server).

It yields typed, frozen items: an `Event` per delivered event and a `Gap` wherever the
server says events were lost. It resumes after a dropped connection with `Last-Event-ID`
(the last id seen, including `cursor` frames, so filtered-out events are not replayed),
never yields an id twice, and stops at `end`, closing the connection itself (a ZenML
server on Python 3.11 sends `end` but may keep the response open).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx

from zstream_mp._settings import env_token, given_server
from zstream_mp._wire import (
    AUTHORIZATION,
    ENV_SERVER,
    LAST_EVENT_ID,
    RESERVED_KINDS,
    RETRY_AFTER,
    bearer,
    describe_detail,
    describe_failure,
    detail_of,
    parse_retry_after,
    stream_url,
)
from zstream_mp.errors import (
    STATUS_ERRORS,
    InvalidRequestError,
    ServerUnavailableError,
    error_for_status,
)

_Scalar = str | int | float | bool | None
_DEDUPE_WINDOW = 65_536
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0


# -- items --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One event as the server delivered it; `id` is the broker id (resume cursor)."""

    id: str
    kind: str
    pipeline_run_id: str
    step_run_id: str | None = None
    step_name: str | None = None
    correlation_id: str | None = None
    index: int | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Gap:
    """The server lost events for this subscriber: `overflow`, `outage` or `shutdown`."""

    reason: str


_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


ERROR_BODY_MAX = 64 * 1024
"""Bytes of an error answer read for its `detail` (a broken server costs no more)."""


def _detail_of(response: httpx.Response) -> Any:
    head = b""
    for chunk in response.iter_bytes():
        head += chunk
        if len(head) >= ERROR_BODY_MAX:
            break
    return detail_of(head[:ERROR_BODY_MAX])


# -- SSE parsing --------------------------------------------------------------------------
@dataclass
class _Frame:
    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None


_EOL = re.compile(rb"\r\n|\r|\n")


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """SSE lines from raw bytes: only CRLF, LF and CR end a line.

    Not `str.splitlines` (nor httpx's `iter_lines`, which uses it): the JSON in a
    `data:` line may hold U+2028, U+0085 or \x1c-\x1e raw, and those are not line ends.
    Linear in the input: each chunk is scanned once and the unfinished line is kept as a
    list of pieces, joined only when its end arrives (a 32 MiB line costs one join, not a
    copy per chunk).
    """
    pending: list[bytes] = []
    skip_lf = False  # the previous chunk ended in CR: a leading LF completes that CRLF
    for chunk in chunks:
        if skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        skip_lf = False
        if not chunk:
            continue
        parts = _EOL.split(chunk)
        tail = parts.pop()
        skip_lf = chunk.endswith(b"\r")
        for part in parts:
            if pending:
                pending.append(part)
                part = b"".join(pending)
                pending = []
            yield part.decode("utf-8", "replace")
        if tail:
            pending.append(tail)
    if pending:
        yield b"".join(pending).decode("utf-8", "replace")


def _frames(lines: Iterable[str]) -> Iterator[_Frame]:
    """SSE frames from decoded lines (WHATWG rules: comments ignored, data lines joined)."""
    frame = _Frame()
    dirty = False
    for line in lines:
        if line == "":
            if dirty:
                yield frame
            frame, dirty = _Frame(), False
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            frame.event, dirty = value, True
        elif name == "data":
            frame.data.append(value)
            dirty = True
        elif name == "id" and "\0" not in value:
            frame.id, dirty = value, True


def _event_from(frame: _Frame) -> Event | None:
    try:
        data = json.loads("\n".join(frame.data))
    except ValueError:
        return None
    if not isinstance(data, dict) or frame.id is None:
        return None
    index = data.get("index")
    payload = data.get("payload")
    return Event(
        id=frame.id,
        kind=str(data.get("kind", frame.event)),
        pipeline_run_id=str(data.get("pipeline_run_id", "")),
        step_run_id=data.get("step_run_id"),
        step_name=data.get("step_name"),
        correlation_id=data.get("correlation_id"),
        index=index if isinstance(index, int) else None,
        payload=payload if isinstance(payload, dict) else {},
    )


class _Dropped(Exception):
    """The connection ended before `end`; resume from the cursor."""


# -- subscribe ----------------------------------------------------------------------------
def _values(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def subscribe(
    server: str | None,
    run_id: str | UUID,
    *,
    token: str | None = None,
    kinds: str | Iterable[str] | None = None,
    correlation_ids: str | Iterable[str] | None = None,
    step_names: str | Iterable[str] | None = None,
    since: str | None = None,
    timeout: float | None = 90.0,
    reconnect: bool = True,
    retry_for: float = 60.0,
    connect_timeout: float = 10.0,
) -> Iterator[Event | Gap]:
    """Iterate over a run's events until the server sends `end`.

    `server`/`token` default to ZSTREAM_SERVER/ZSTREAM_TOKEN. `since` resumes after an id.
    `timeout` is the longest silence (heartbeats count) before the connection is treated
    as dead. With `reconnect`, drops are retried with capped backoff for up to `retry_for`
    seconds of consecutive failure (any frame received ends a failure), however long the
    stream has lived; then `ServerUnavailableError` is raised.
    Refusals (401/403/404/400/422/501) raise the matching `SubscribeError` at once.
    """
    base = given_server(server)
    if not base:
        raise InvalidRequestError(f"no server given (pass server= or set {ENV_SERVER})")
    token = token if token is not None else env_token()
    url = stream_url(base, str(run_id))
    params: list[tuple[str, _Scalar]] = [("kinds", k) for k in _values(kinds)]
    params += [("step_names", s) for s in _values(step_names)]
    params += [("correlation_ids", c) for c in _values(correlation_ids)]
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if token:
        headers[AUTHORIZATION] = bearer(token)
    limits = httpx.Timeout(connect=connect_timeout, read=timeout, write=connect_timeout, pool=None)
    return _iterate(url, params, headers, limits, since, reconnect, retry_for)


def _iterate(
    url: str,
    params: list[tuple[str, _Scalar]],
    headers: dict[str, str],
    timeouts: httpx.Timeout,
    cursor: str | None,
    reconnect: bool,
    retry_for: float,
) -> Iterator[Event | Gap]:
    seen: OrderedDict[str, None] = OrderedDict()
    backoff = _BACKOFF_MIN
    failing_since: float | None = None
    """When the current run of consecutive failures began; None while the stream is healthy."""
    connected = False
    with httpx.Client(timeout=timeouts, follow_redirects=False) as client:
        while True:
            request_headers = dict(headers)
            if cursor:
                request_headers[LAST_EVENT_ID] = cursor
            retry_after: float | None = None
            failure: str
            try:
                with client.stream("GET", url, params=params, headers=request_headers) as resp:
                    if resp.status_code != 200:
                        detail = _detail_of(resp)
                        status = resp.status_code
                        if status in STATUS_ERRORS or status not in _RETRY_STATUSES:
                            raise error_for_status(status)(
                                f"server answered {resp.status_code}: {describe_detail(detail)}",
                                resp.status_code,
                                detail,
                            )
                        retry_after = _retry_after(resp)
                        raise _Dropped(f"server answered {resp.status_code}")
                    connected = True
                    for frame in _frames(_lines(resp.iter_bytes())):
                        backoff = _BACKOFF_MIN
                        failing_since = None  # a frame arrived: the stream is healthy
                        if frame.id:
                            cursor = frame.id
                        if frame.event == "end":
                            return
                        if frame.event == "gap":
                            yield Gap(_gap_reason(frame))
                        elif frame.event == "error":
                            raise _Dropped("server reported a stream failure")
                        elif frame.event not in RESERVED_KINDS and frame.id:  # cursor, system
                            if frame.id in seen:
                                continue
                            event = _event_from(frame)
                            if event is None:
                                continue
                            seen[frame.id] = None
                            if len(seen) > _DEDUPE_WINDOW:
                                seen.popitem(last=False)
                            yield event
                    raise _Dropped("server closed the stream before end")
            except _Dropped as exc:
                failure = str(exc)
            except httpx.TransportError as exc:
                failure = describe_failure(exc)
                if not connected:  # never reached the server: fail fast, nothing to resume
                    raise ServerUnavailableError(f"cannot reach {url}: {failure}") from exc
            if not reconnect:
                raise ServerUnavailableError(f"connection to {url} lost: {failure}")
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
            if now - failing_since > retry_for:
                raise ServerUnavailableError(
                    f"could not (re)connect to {url} for {retry_for:g}s: {failure}"
                )
            delay = retry_after if retry_after is not None else random.uniform(0, backoff)
            time.sleep(min(delay, _BACKOFF_MAX * 6))
            backoff = min(backoff * 2, _BACKOFF_MAX)


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get(RETRY_AFTER))


def _gap_reason(frame: _Frame) -> str:
    try:
        data = json.loads("\n".join(frame.data))
    except ValueError:
        return "unknown"
    reason = data.get("reason") if isinstance(data, dict) else None
    return str(reason) if reason else "unknown"


__all__ = ["Event", "Gap", "subscribe"]
