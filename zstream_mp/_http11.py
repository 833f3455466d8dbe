"""A lean HTTP/1.1 client for the sender's POSTs to plain-HTTP servers.

A POST through httpx costs the sending thread about 0.6 ms of CPU at batch 1 and 0.9 ms at
batch 64 (URL and header models, the connection pool, h11's event machine), as much as our
server's own handling of a batch of 64; that thread shares the GIL with the caller. Here a
POST is one `sendall` of a request head built once per destination plus the batch body,
and a small parser for the answer: tens of microseconds.

It does only what the sender needs: keep-alive connections (at most `KEEP_IDLE` idle per
server, reused only while younger than `KEEP_ALIVE_EXPIRY`, and, once idle for a while, only
if not readable, so one the server closed is not written to), `Content-Length`, chunked and
close-delimited answers read up to a bound, and every connect, write and read held to the
attempt's deadline (a server that trickles a byte a second still times out). It makes as
few system calls as it can: each one releases the GIL, and a caller publishing in a loop
may then keep it for the interpreter's switch interval (5 ms) before the sender runs again.
The transport uses it only where httpx would add nothing: `http://` servers without
credentials in the URL and no proxy in the environment; everything else (TLS, proxies, the
tests' mock transports) goes through httpx.

Thread-safe: the process's own flush may resume its spool while the sender thread posts,
each on a connection of its own. After a fork the owner drops the whole client (never
closes it), so a child never writes to its parent's connections.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit

from zstream_mp._wire import AUTHORIZATION
from zstream_mp.errors import AttemptFailed, UnsendableHeader

KEEP_ALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept (httpx's default; uvicorn closes idle ones at 5 s)."""
CHECK_IDLE_AFTER = 0.5
"""A connection idle longer than this is checked for readability before it is reused; one
used just now is not (the check is a system call, and each one hands the GIL over to a
caller that may keep it for the interpreter's switch interval, 5 ms)."""
DEADLINE_SLACK = 0.01
"""Seconds a socket operation may end past the attempt's deadline: the socket's timeout is
set again only when it would let an operation overrun by more (again a system call)."""
KEEP_IDLE = 2
"""Idle connections kept per server (httpx's pool keeps as many for the sender)."""
HEAD_MAX = 32 * 1024
"""Bytes of status line and headers read before an answer is refused as malformed."""
_READ = 32 * 1024
_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")
_SAFE_PATH = "/:@!$&'()*+,;=-._~%"
_NO_BODY = (204, 304)
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


@dataclass
class Answer:
    """A server's answer: the status, its headers (names in lower case), and at most the
    first `limit` bytes of its body."""

    status: int
    headers: Mapping[str, str]
    head: bytes


def usable_for(server: str) -> bool:
    """Whether this client can carry requests to `server` exactly as httpx would."""
    parts = urlsplit(server)
    if parts.scheme != "http" or parts.username or parts.password or not parts.hostname:
        return False
    if not parts.hostname.isascii():
        return False
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return not any(os.environ.get(name) for name in _PROXY_VARIABLES)


@dataclass
class _Origin:
    host: str
    port: int
    authority: str


def _origin(parts: SplitResult) -> _Origin:
    host = parts.hostname or ""
    port = parts.port or 80
    shown = f"[{host}]" if ":" in host else host
    return _Origin(host, port, shown if port == 80 else f"{shown}:{port}")


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = time.monotonic()

    def stale(self, now: float) -> bool:
        """Idle too long, or readable while idle (closed by the server, or stray bytes)."""
        idle = now - self.idle_since
        if idle > KEEP_ALIVE_EXPIRY:
            return True
        if idle < CHECK_IDLE_AFTER:
            return False
        return _readable(self.sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _readable(sock: socket.socket) -> bool:
    """Whether `sock` has something to read (or is closed) right now; `poll` where there is
    one, since `select` cannot watch a descriptor past 1,023."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    except (OSError, ValueError):
        return True


class Client:
    """Keep-alive POSTs to plain-HTTP servers, each attempt held to one deadline."""

    def __init__(self, user_agent: str, connect_timeout: float) -> None:
        self._user_agent = user_agent
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._heads: dict[tuple[str, str | None], tuple[_Origin, bytes]] = {}

    def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        deadline: float,
        limit: int,
    ) -> Answer:
        """POST `body` to `url` with `headers` (beyond the fixed ones); read at most `limit`
        bytes of the answer's body. Raises `AttemptFailed` or `UnsendableHeader`."""
        origin, fixed = self._head_of(url, headers.get(AUTHORIZATION))
        extra = "".join(
            f"{name}: {_value(value)}\r\n"
            for name, value in headers.items()
            if name != AUTHORIZATION
        )
        try:
            tail = f"{extra}Content-Length: {len(body)}\r\n\r\n".encode("ascii")
        except UnicodeEncodeError:
            raise UnsendableHeader() from None
        conn = self._connection(origin, deadline)
        keep = False
        try:
            _sendall(conn.sock, fixed + tail + body, deadline)
            answer, keep = _read_answer(conn.sock, deadline, limit)
            return answer
        finally:
            if keep:
                self._release(origin, conn)
            else:
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _head_of(self, url: str, authorization: str | None) -> tuple[_Origin, bytes]:
        """The request line and the headers fixed per destination, built once."""
        key = (url, authorization)
        found = self._heads.get(key)
        if found is not None:
            return found
        parts = urlsplit(url)
        origin = _origin(parts)
        target = quote(parts.path or "/", safe=_SAFE_PATH)
        if parts.query:
            target += "?" + quote(parts.query, safe=_SAFE_PATH + "?")
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {origin.authority}",
            "Accept: */*",
            "Accept-Encoding: identity",
            "Connection: keep-alive",
            f"User-Agent: {self._user_agent}",
            "Content-Type: application/json",
        ]
        if authorization is not None:
            lines.append(f"{AUTHORIZATION}: {_value(authorization)}")
        try:
            head = ("\r\n".join(lines) + "\r\n").encode("ascii")
        except UnicodeEncodeError:
            raise UnsendableHeader() from None
        if len(self._heads) >= 64:
            self._heads.clear()
        self._heads[key] = (origin, head)
        return origin, head

    def _connection(self, origin: _Origin, deadline: float) -> _Connection:
        now = time.monotonic()
        key = (origin.host, origin.port)
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if not conn.stale(now):
                    return conn
                conn.close()
        remaining = deadline - now
        if remaining <= 0:
            raise AttemptFailed("ConnectTimeout", "the request's deadline has passed", sent=False)
        try:
            sock = socket.create_connection(
                (origin.host, origin.port), timeout=min(remaining, self._connect_timeout)
            )
        except TimeoutError as exc:
            raise AttemptFailed("ConnectTimeout", str(exc) or "timed out", sent=False) from None
        except OSError as exc:
            raise AttemptFailed("ConnectError", str(exc), sent=False) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(sock)

    def _release(self, origin: _Origin, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault((origin.host, origin.port), [])
            if len(idle) < KEEP_IDLE:
                idle.append(conn)
                return
        conn.close()


def _value(text: str) -> str:
    """`text` as a header value; `UnsendableHeader` when it holds a control character (a token
    with a line break in it would otherwise add a header of its own)."""
    if _CONTROL.search(text):
        raise UnsendableHeader()
    return text


def _remaining(deadline: float, kind: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AttemptFailed(kind, "the request's deadline has passed", sent=True)
    return remaining


def _hold_to(sock: socket.socket, deadline: float, kind: str) -> None:
    """Let the next operation on `sock` end by `deadline` (within `DEADLINE_SLACK`)."""
    remaining = _remaining(deadline, kind)
    current = sock.gettimeout()
    if current is None or current > remaining + DEADLINE_SLACK or current < remaining - 1.0:
        sock.settimeout(remaining)


def _sendall(sock: socket.socket, data: bytes, deadline: float) -> None:
    # sendall's timeout bounds the whole call (Python >= 3.5), not each chunk
    _hold_to(sock, deadline, "WriteTimeout")
    try:
        sock.sendall(data)
    except TimeoutError:
        raise AttemptFailed("WriteTimeout", "timed out", sent=True) from None
    except OSError as exc:
        raise AttemptFailed("WriteError", str(exc), sent=True) from None


class _Reader:
    """Buffered reads of one answer, each held to the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()
        self.eof = False

    def fill(self) -> bool:
        """Read more; False at the end of the stream."""
        if self.eof:
            return False
        _hold_to(self.sock, self.deadline, "ReadTimeout")
        try:
            chunk = self.sock.recv(_READ)
        except TimeoutError:
            raise AttemptFailed("ReadTimeout", "timed out", sent=True) from None
        except OSError as exc:
            raise AttemptFailed("ReadError", str(exc), sent=True) from None
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def line(self, limit: int) -> bytes:
        """One CRLF-terminated line (without it)."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > limit:
                raise _protocol("a header line is too long")
            if not self.fill():
                raise _protocol("Server disconnected without sending a complete response.")

    def head_block(self) -> bytes:
        """An answer's status line and headers, up to the empty line (consumed, not
        returned)."""
        searched = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", searched)
            if end >= 0:
                block = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return block
            if len(self.buffer) > HEAD_MAX:
                raise _protocol("the response head is too large")
            searched = max(0, len(self.buffer) - 3)
            if not self.fill():
                raise _protocol(
                    "Server disconnected without sending a response."
                    if not self.buffer
                    else "Server disconnected without sending a complete response."
                )

    def take(self, n: int) -> bytes:
        """Exactly `n` bytes, or what there is before the end of the stream."""
        while len(self.buffer) < n and self.fill():
            pass
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out


def _protocol(detail: str) -> AttemptFailed:
    return AttemptFailed("RemoteProtocolError", detail, sent=True)


def _read_head(reader: _Reader) -> tuple[int, bytes, dict[str, str]]:
    """Status, version and headers of the final answer (interim 1xx answers skipped)."""
    while True:
        block = reader.head_block()
        status_line, *lines = block.split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _protocol(f"malformed status line {status_line[:40]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon:
                raise _protocol("malformed header line")
            key = name.strip().decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if 100 <= status < 200 and status != 101:
            continue
        return status, version, headers


def _read_answer(sock: socket.socket, deadline: float, limit: int) -> tuple[Answer, bool]:
    """The answer, and whether the connection may carry another request."""
    reader = _Reader(sock, deadline)
    status, version, headers = _read_head(reader)
    keep = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in _NO_BODY:
        return Answer(status, headers, b""), keep and not reader.buffer
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, complete = _read_chunked(reader, limit)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"].split(",")[0])
        except ValueError:
            raise _protocol("malformed Content-Length") from None
        if length < 0:
            raise _protocol("malformed Content-Length")
        body = reader.take(min(length, limit))
        complete = length <= limit
        if len(body) < min(length, limit):
            raise _protocol("Server disconnected before the end of the response body.")
    else:  # delimited by the end of the connection
        while len(reader.buffer) < limit and reader.fill():
            pass
        body, complete = bytes(reader.buffer[:limit]), False
    return Answer(status, headers, body), keep and complete and not reader.buffer


def _read_chunked(reader: _Reader, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of a chunked body; True when it was read to its end."""
    parts: list[bytes] = []
    size = 0
    while True:
        line = reader.line(HEAD_MAX)
        try:
            n = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise _protocol("malformed chunk size") from None
        if n == 0:
            while reader.line(HEAD_MAX):  # trailers, up to the empty line
                pass
            return b"".join(parts), True
        if size + n > limit:
            parts.append(reader.take(limit - size))
            return b"".join(parts), False
        chunk = reader.take(n)
        if len(chunk) < n or reader.take(2) != b"\r\n":
            raise _protocol("Server disconnected before the end of the response body.")
        parts.append(chunk)
        size += n
