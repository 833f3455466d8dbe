"""A scriptable HTTP server that injects real faults into the publish endpoint.

Run as a subprocess (``python tests/_faultserver.py --port 0 --record DIR``) so every fault is a
real socket-level event: a real 503 with Retry-After, a real connection dropped after the body was
read, a real stall that never answers, a real refused connection when the process is gone.

It implements ``POST /api/v1/runs/{run}/events`` with ZenML's validation (run id must match the
URL, reserved kinds are 400, more than 1,000 events is 422) and answers 200
``{"count": n, "last_id": "..."}``. What it does with each request follows a *script*: an
ordered list of rules, each applied to the next ``count`` publish requests (``count`` omitted:
forever). When the script is exhausted, requests are accepted. Rules:

    {"status": 503, "retry_after": 30, "count": 3}   answer that status (any 4xx/5xx)
    {"action": "drop", "count": 1}                   read the body, close the socket, no answer
    {"action": "reset", "count": 1}                  read the body, close with RST (SO_LINGER 0)
    {"action": "accept_drop", "count": 1}            store the events, then drop without answering
    {"action": "stall", "count": 1}                  read the body, never answer
    {"action": "trickle", "interval": 1.0}           answer one byte per interval, never ending
    {"action": "accept", "delay": 0.5, "count": 2}   accept after a delay

The script comes from ``--script JSON`` and can be replaced at run time with
``POST /_control/script`` (body: the JSON list). ``GET /_control/state`` returns counters.

Records (JSON lines, flushed per line, so a test can read them while the server runs):
``DIR/events.jsonl``: one line per accepted event ``{"key", "run", "headers", "event"}``;
``DIR/requests.jsonl``: one line per publish request ``{"n", "t", "run", "key", "status",
"action", "count", "headers", "events"}`` (``status`` is null when nothing was answered).

The first line on stdout is ``faultserver on http://127.0.0.1:PORT``. Standard library only,
so it runs under any interpreter the tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESERVED_KINDS = {"end", "gap", "error", "cursor", "system"}
EVENTS_PATH = re.compile(r"^/api/v1/runs/([^/]+)/events/?$")
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

    def __init__(self, record: Path, token: str | None, script: Script) -> None:
        record.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
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
            for ev in events:
                self.next_id += 1
                line = {"key": key, "run": run, "headers": headers, "event": ev}
                self.events_file.write(json.dumps(line) + "\n")
            self.events_file.flush()
            self.accepted += len(events)
            return str(self.next_id)


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
        else:
            self._answer(404, {"detail": "Not Found"})

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
        status, answer = self._validate(run, headers, events, bad)
        if status != 200:
            entry["status"] = status
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

    def _validate(
        self, run: str, headers: dict[str, str], events: list[Any], bad: str | None
    ) -> tuple[int, Any]:
        st = self.server.state
        if bad is not None:
            return 422, ["ValueError", bad]
        if st.token is not None and headers.get("authorization") != f"Bearer {st.token}":
            return 401, {"detail": "Not authenticated"}
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


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: State


# -- the test side: start, script, read and restart the server process -------------------------


class FaultProcess:
    """A running fault server subprocess, as seen from a test."""

    def __init__(
        self,
        record: Path,
        script: list[dict[str, Any]] | None = None,
        token: str | None = None,
        port: int = 0,
        python: str | None = None,
    ) -> None:
        self.record = Path(record)
        self.token = token
        self.python = python or sys.executable
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.start(script or [])

    def start(self, script: list[dict[str, Any]] | None = None, timeout: float = 10.0) -> None:
        """Start the process (again, on the same port once it has one)."""
        cmd = [
            self.python,
            str(Path(__file__).resolve()),
            "--port",
            str(self.port),
            "--record",
            str(self.record),
            "--script",
            json.dumps(script or []),
        ]
        if self.token is not None:
            cmd += ["--token", self.token]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
            if line.startswith("faultserver on "):
                break
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.wait()
            if "Address already in use" not in err or time.monotonic() > deadline:
                raise RuntimeError(f"fault server did not start: {line!r} {err}")
            time.sleep(0.05)
        self.url = line.split(" on ", 1)[1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Kill the process: from now on connections are refused."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> FaultProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_script(self, rules: list[dict[str, Any]]) -> None:
        """Replace the fault script of the running server."""
        req = urllib.request.Request(
            f"{self.url}/_control/script", data=json.dumps(rules).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def _lines(self, name: str) -> list[dict[str, Any]]:
        path = self.record / name
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def accepted(self) -> list[dict[str, Any]]:
        """Every accepted event: ``{"key", "run", "headers", "event"}``."""
        return self._lines("events.jsonl")

    def requests(self) -> list[dict[str, Any]]:
        """Every publish request, answered or not."""
        return self._lines("requests.jsonl")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--script", default="[]", help="JSON list of rules")
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args(argv)

    server = FaultServer((args.host, args.port), Handler)
    server.state = State(args.record, args.token, Script(json.loads(args.script)))
    host, port = server.server_address[:2]
    print(f"faultserver on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.state.stop.set()


if __name__ == "__main__":
    sys.exit(main())
