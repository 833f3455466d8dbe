"""A scriptable HTTP server that injects real faults into the publish endpoint.

Run as a subprocess (`python tests/programs/servers/faultserver.py --port 0 --record DIR`) so
every fault is a real socket-level event: a real 503 with Retry-After, a real connection dropped
after the body was read, a real stall that never answers, a real refused connection when the
process is gone. Tests start it through `helpers.faultserver.FaultProcess`.

It implements `POST /api/v1/runs/{run}/events` with ZenML's validation (run id must match the
URL, reserved kinds are 400, more than 1,000 events is 422) and answers 200
`{"count": n, "last_id": "..."}`. What it does with each request follows a *script*: an
ordered list of rules, each applied to the next `count` publish requests (`count` omitted:
forever). When the script is exhausted, requests are accepted. Rules:

    {"status": 503, "retry_after": 30, "count": 3}   answer that status (any 4xx/5xx)
    {"action": "drop", "count": 1}                   read the body, close the socket, no answer
    {"action": "reset", "count": 1}                  read the body, close with RST (SO_LINGER 0)
    {"action": "accept_drop", "count": 1}            store the events, then drop without answering
    {"action": "stall", "count": 1}                  read the body, never answer
    {"action": "trickle", "interval": 1.0}           answer one byte per interval, never ending
    {"action": "accept", "delay": 0.5, "count": 2}   accept after a delay

The script comes from `--script JSON` and can be replaced at run time with
`POST /_control/script` (body: the JSON list). `GET /_control/state` returns counters.

`GET /api/v1/runs/{run}/events/stream` replays what the server stored for the run as
ZenML's SSE does: one frame per event, `id: <n>` / `event: <kind>` / `data: <the
event's seven fields, compact JSON>`, resuming strictly after `Last-Event-ID` (or
`?since=`), then live events as they are stored, a `: ping` comment every
`--heartbeat` seconds (ZenML's 30 s by default) and no `end` frame: the run is in
progress, the stream stays open until the client leaves. It requires the token like a
publish (401), accepts a `--read-token` too (which a publish answers 403).

With `--upstream URL` the server is a fault *front* for another server (ours): the script
is played the same way, but what it accepts (after any `delay`) is forwarded to the
upstream with its headers and body, and the upstream's answer is relayed (and recorded in
`requests.jsonl`); nothing is stored here and the stream is relayed from the upstream.

Records (JSON lines, flushed per line, so a test can read them while the server runs):
`DIR/events.jsonl`: one line per accepted event `{"key", "run", "headers", "event"}`;
`DIR/requests.jsonl`: one line per publish request `{"n", "t", "run", "key", "status",
"action", "count", "headers", "events"}` (`status` is null when nothing was answered).

The first line on stdout is `faultserver on http://127.0.0.1:PORT`. Standard library only,
so it runs under any interpreter the tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RESERVED_KINDS = {"end", "gap", "error", "cursor", "system"}
EVENTS_PATH = re.compile(r"^/api/v1/runs/([^/]+)/events/?$")
STREAM_PATH = re.compile(r"^/api/v1/runs/([^/]+)/events/stream/?$")
EVENT_FIELDS = (
    "pipeline_run_id",
    "step_run_id",
    "step_name",
    "kind",
    "correlation_id",
    "index",
    "payload",
)
MAX_BATCH = 1000


class Script:
    """The ordered fault rules, consumed one publish request at a time."""

    def __init__(self, rules: list[dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self.replace(rules)

    def replace(self, rules: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rules = [dict(r) for r in rules]
            self._used = [0] * len(self._rules)

    def next_rule(self) -> dict[str, Any]:
        with self._lock:
            for i, rule in enumerate(self._rules):
                count = rule.get("count")
                if count is None or self._used[i] < count:
                    self._used[i] += 1
                    return rule
            return {"action": "accept"}


class State:
    """Shared counters and the two record files."""

    def __init__(
        self,
        record: Path,
        token: str | None,
        script: Script,
        read_tokens: list[str] | None = None,
        upstream: str | None = None,
        heartbeat: float = 30.0,
    ) -> None:
        record.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.stored = threading.Condition(self.lock)
        self.history: dict[str, list[tuple[int, Any]]] = {}
        self.read_tokens = set(read_tokens or ())
        self.upstream = upstream.rstrip("/") if upstream else None
        self.heartbeat = heartbeat
        self.events_file = open(record / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.requests_file = open(record / "requests.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.token = token
        self.script = script
        self.requests = 0
        self.accepted = 0
        self.next_id = 0
        self.stop = threading.Event()

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests_file.write(json.dumps(entry) + "\n")
            self.requests_file.flush()

    def store(self, run: str, key: str | None, headers: dict[str, str], events: list[Any]) -> str:
        with self.lock:
            history = self.history.setdefault(run, [])
            for ev in events:
                self.next_id += 1
                history.append((self.next_id, ev))
                line = {"key": key, "run": run, "headers": headers, "event": ev}
                self.events_file.write(json.dumps(line) + "\n")
            self.events_file.flush()
            self.accepted += len(events)
            self.stored.notify_all()
            return str(self.next_id)

    def auth(self, headers: dict[str, str], publish: bool) -> int | None:
        """None when the request may proceed, else the status refusing it (401 or 403)."""
        if self.token is None:
            return None
        given = headers.get("authorization", "")
        if given == f"Bearer {self.token}":
            return None
        if any(given == f"Bearer {t}" for t in self.read_tokens):
            return 403 if publish else None
        return 401


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- helpers -----------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _drop(self, reset: bool) -> None:
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        st = self.server.state
        if self.path == "/health":
            self._answer(200, {"ok": True})
        elif self.path == "/_control/state":
            with st.lock:
                self._answer(200, {"requests": st.requests, "accepted": st.accepted})
        elif stream := STREAM_PATH.match(urlsplit(self.path).path):
            if st.upstream is not None:
                self._relay_stream()
            else:
                self._stream(stream.group(1))
        else:
            self._answer(404, {"detail": "Not Found"})

    # -- the SSE stream ----------------------------------------------------------------------
    def _stream(self, run: str) -> None:
        st = self.server.state
        headers = {k.lower(): v for k, v in self.headers.items()}
        refused = st.auth(headers, publish=False)
        if refused is not None:
            self._answer(refused, {"detail": "Not authenticated" if refused == 401 else "denied"})
            return
        query = parse_qs(urlsplit(self.path).query)
        cursor = headers.get("last-event-id") or (query.get("since") or [""])[0]
        if cursor and not cursor.isdigit():
            detail = ["ValueError", f"cursor {cursor!r} is not a non-negative integer"]
            self._answer(400, {"detail": detail})
            return
        after = int(cursor) if cursor else 0
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache, no-store, no-transform")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0  # index into the run's history
        last_write = time.monotonic()
        try:
            while not st.stop.is_set():
                with st.stored:
                    history = st.history.get(run, [])
                    if sent >= len(history):
                        wait = st.heartbeat - (time.monotonic() - last_write)
                        st.stored.wait(max(0.0, min(wait, 0.5)))
                        history = st.history.get(run, [])
                    batch = history[sent:]
                    sent = len(history)
                out = b"".join(_frame(i, ev) for i, ev in batch if i > after)
                if not out and time.monotonic() - last_write >= st.heartbeat:
                    out = b": ping\n\n"
                if out:
                    self.wfile.write(out)
                    self.wfile.flush()
                    last_write = time.monotonic()
        except OSError:
            pass  # the client left

    def _relay_stream(self) -> None:
        """Front mode: relay the upstream's stream, chunk by chunk, as it comes."""
        st = self.server.state
        assert st.upstream is not None
        conn = _upstream_conn(st.upstream, timeout=None)
        skip = ("host", "connection")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        self.close_connection = True
        try:
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            while not st.stop.is_set():
                chunk = resp.read1(65536)
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass
        finally:
            conn.close()

    def do_POST(self) -> None:
        st = self.server.state
        if self.path == "/_control/script":
            st.script.replace(json.loads(self._body() or b"[]"))
            self._answer(200, {"ok": True})
            return
        match = EVENTS_PATH.match(self.path.split("?", 1)[0])
        if not match:
            self._body()
            self._answer(404, {"detail": "Not Found"})
            return
        self._publish(match.group(1))

    def _publish(self, run: str) -> None:
        st = self.server.state
        raw = self._body()
        if len(raw) < int(self.headers.get("Content-Length") or 0):
            # the client left mid-body (a process killed while posting): like any server,
            # process nothing; note it, so a test can tell
            with st.lock:
                st.requests += 1
                n = st.requests
            st.log_request(
                {
                    "n": n,
                    "t": time.time(),
                    "run": run,
                    "key": self.headers.get("Idempotency-Key"),
                    "headers": {},
                    "count": 0,
                    "events": [],
                    "status": None,
                    "action": "truncated",
                }
            )
            self.close_connection = True
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        key = headers.get("idempotency-key")
        with st.lock:
            st.requests += 1
            n = st.requests
        try:
            body = json.loads(raw)
            events = body["events"]
            if not isinstance(events, list):
                raise TypeError("events is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            events = []
            bad: str | None = f"bad body: {exc}"
        else:
            bad = None
        entry: dict[str, Any] = {
            "n": n,
            "t": time.time(),
            "run": run,
            "key": key,
            "headers": headers,
            "count": len(events),
            "events": events,
            "status": None,
            "action": None,
        }
        rule = st.script.next_rule()
        action = rule.get("action", "status" if "status" in rule else "accept")
        entry["action"] = action

        if action in ("drop", "reset"):
            st.log_request(entry)
            self._drop(reset=action == "reset")
            return
        if action == "trickle":  # a response that never ends, one byte at a time
            st.log_request(entry)
            interval = float(rule.get("interval", 1.0))
            with contextlib.suppress(OSError):
                for byte in b"HTTP/1.1 200 OK\r\nX-Trickle: " + b"z" * 10_000:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if st.stop.wait(interval):
                        break
            self.close_connection = True
            return
        if action == "stall":
            st.log_request(entry)
            st.stop.wait(float(rule.get("seconds", 3600)))
            self.close_connection = True
            return
        if action == "status":
            status = int(rule["status"])
            extra = {}
            if "retry_after" in rule:
                extra["Retry-After"] = str(rule["retry_after"])
            entry["status"] = status
            st.log_request(entry)
            self._answer(status, {"detail": rule.get("detail", f"injected {status}")}, extra)
            return

        # accept / accept_drop: authenticate and validate like ZenML, then store.
        if rule.get("delay"):
            time.sleep(float(rule["delay"]))
        if st.upstream is not None:
            self._forward(raw, entry, drop=action == "accept_drop")
            return
        status, answer = self._validate(run, headers, events, bad)
        if status != 200:
            entry["status"] = status
            entry["detail"] = answer
            st.log_request(entry)
            self._answer(status, answer)
            return
        last_id = st.store(run, key, headers, events) if events else None
        if action == "accept_drop":
            st.log_request(entry)
            self._drop(reset=False)
            return
        entry["status"] = 200
        st.log_request(entry)
        self._answer(200, {"count": len(events), "last_id": last_id})

    def _forward(self, raw: bytes, entry: dict[str, Any], drop: bool) -> None:
        """Front mode: POST the request to the upstream; relay (or, `drop`, lose) its answer."""
        st = self.server.state
        assert st.upstream is not None
        skip = ("host", "connection", "content-length")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        headers["Content-Length"] = str(len(raw))
        conn = _upstream_conn(st.upstream, timeout=30.0)
        try:
            conn.request("POST", self.path, body=raw, headers=headers)
            resp = conn.getresponse()
            status, data = resp.status, resp.read()
            relayed = ("retry-after", "idempotent-replayed")
            extra = {k: v for k, v in resp.getheaders() if k.lower() in relayed}
        except OSError as exc:
            status, data, extra = 502, json.dumps({"detail": f"upstream: {exc}"}).encode(), {}
        finally:
            conn.close()
        if drop:
            st.log_request(entry)
            self._drop(reset=False)
            return
        entry["status"] = status
        if status >= 300:
            try:
                entry["detail"] = json.loads(data)
            except ValueError:
                entry["detail"] = data[:300].decode("utf-8", "replace")
        st.log_request(entry)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _validate(
        self, run: str, headers: dict[str, str], events: list[Any], bad: str | None
    ) -> tuple[int, Any]:
        st = self.server.state
        if bad is not None:
            return 422, ["ValueError", bad]
        refused = st.auth(headers, publish=True)
        if refused is not None:
            detail = "Not authenticated" if refused == 401 else ["IllegalOperationError", "denied"]
            return refused, {"detail": detail}
        if len(events) > MAX_BATCH:
            return 422, ["ValueError", f"more than {MAX_BATCH} events"]
        for ev in events:
            if not isinstance(ev, dict) or "kind" not in ev:
                return 422, ["ValueError", "event without kind"]
            if ev.get("pipeline_run_id") != run:
                return 400, {"detail": ["ValueError", "run id mismatch"]}
            if ev["kind"] in RESERVED_KINDS:
                return 400, {"detail": ["ValueError", "reserved kind"]}
        return 200, None


def _frame(event_id: int, event: Any) -> bytes:
    """One SSE frame as ZenML writes it: the event's seven fields in ZenML's order."""
    if not isinstance(event, dict):
        return b""
    ordered = {name: event.get(name, {} if name == "payload" else None) for name in EVENT_FIELDS}
    kind = str(event.get("kind"))
    name = "cursor" if "\n" in kind or "\r" in kind else kind
    data = "{}" if name == "cursor" else json.dumps(ordered, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


def _upstream_conn(upstream: str, timeout: float | None) -> http.client.HTTPConnection:
    parts = urlsplit(upstream)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: State

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that left mid-answer (a process exiting) is part of the faults


# -- the test side: start, script, read and restart the server process -------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--script", default="[]", help="JSON list of rules")
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument(
        "--read-token",
        action="append",
        default=[],
        help="a token that may read the stream; a publish with it is answered 403",
    )
    parser.add_argument("--upstream", default=None, help="forward accepted requests there")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="SSE ': ping' interval")
    args = parser.parse_args(argv)

    server = FaultServer((args.host, args.port), Handler)
    server.state = State(
        args.record,
        args.token,
        Script(json.loads(args.script)),
        read_tokens=args.read_token,
        upstream=args.upstream,
        heartbeat=args.heartbeat,
    )
    host, port = server.server_address[:2]
    print(f"faultserver on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.state.stop.set()


if __name__ == "__main__":
    sys.exit(main())
