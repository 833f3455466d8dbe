"""The sender's path to the wire: the lean HTTP/1.1 client against a loopback socket server,
and the sender's verdicts (sent, kept for 401/5xx, kept at exit) over `httpx.MockTransport`.

The loopback server is a thread that reads each request whole and answers from a script,
so the bytes on the wire (request line, headers, body) are checked as the server sees them.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from zstream_mp import _http11, _transport
from zstream_mp._health import DeliveryHealth
from zstream_mp._queue import EventQueue
from zstream_mp._recovery.spill import Spill
from zstream_mp._sender import Sender, group_by_destination
from zstream_mp._stream_context import Destination
from zstream_mp._transport import UNSENDABLE, Outcome, Transport
from zstream_mp._version import __version__
from zstream_mp._wire import batch_body
from zstream_mp.errors import AttemptFailed

RUN = str(uuid.uuid4())
EVENTS = [b'{"kind":"a","payload":{"i":1}}', b'{"kind":"b","payload":{"i":2}}']
OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"count":2}'


@dataclass
class Seen:
    """One request as the loopback server read it."""

    connection: int
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Loopback:
    """A scripted HTTP/1.1 server: each answer is raw bytes (the last one repeats), or
    `None` to close the connection without answering, `"hang"` to never answer, or
    `"ok-then-close"` to answer 200 (keep-alive) and close the connection at once."""

    answers: list[bytes | str | None]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    closed: threading.Event = field(default_factory=threading.Event)
    """Set once an `"ok-then-close"` answer has closed its connection."""

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            n += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                line, *rest = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)}
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.seen.append(Seen(n, line, headers, body))
                answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                if answer is None:
                    return
                if answer == "hang":
                    time.sleep(30)
                    return
                if answer == "ok-then-close":
                    conn.sendall(OK)
                    conn.close()
                    self.closed.set()
                    return
                assert isinstance(answer, bytes)
                conn.sendall(answer)

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def loopback(request: pytest.FixtureRequest) -> Iterator[Loopback]:
    server = Loopback(list(request.param))
    yield server
    server.close()


def post(t: Transport, url: str, token: str | None = "tok", give_up_in: float = 30.0) -> Any:
    give_up_at = time.monotonic() + give_up_in
    return t.post(url, RUN, token, batch_body(EVENTS), lambda: give_up_at)


def lean(request_timeout: float = 5.0, retry_deadline: float = 5.0) -> Transport:
    return Transport(request_timeout, retry_deadline)


# --------------------------------------------------------------------------- the lean client


@pytest.mark.parametrize("loopback", [[OK]], indirect=True)
def test_the_request_on_the_wire_is_the_contract(loopback: Loopback) -> None:
    result = post(lean(), loopback.url)
    assert result.outcome is Outcome.DELIVERED
    (seen,) = loopback.seen
    assert seen.line == f"POST /api/v1/runs/{RUN}/events HTTP/1.1"
    assert seen.body == b'{"events":[' + b",".join(EVENTS) + b"]}"
    assert seen.headers["host"] == loopback.url.removeprefix("http://")
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == str(len(seen.body))
    assert seen.headers["user-agent"] == f"zstream-mp/{__version__}"
    assert seen.headers["authorization"] == "Bearer tok"
    uuid.UUID(seen.headers["idempotency-key"])


@pytest.mark.parametrize("loopback", [[OK]], indirect=True)
def test_batches_share_one_keep_alive_connection_and_each_has_its_key(
    loopback: Loopback,
) -> None:
    t = lean()
    for _ in range(3):
        assert post(t, loopback.url, token=None).outcome is Outcome.DELIVERED
    assert {s.connection for s in loopback.seen} == {1}
    assert len({s.headers["idempotency-key"] for s in loopback.seen}) == 3
    assert all("authorization" not in s.headers for s in loopback.seen)


@pytest.mark.parametrize("loopback", [["ok-then-close", OK]], indirect=True)
def test_a_kept_connection_the_server_closed_is_not_written_to(
    loopback: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http11, "CHECK_IDLE_AFTER", 0.0)
    t = lean()
    assert post(t, loopback.url).outcome is Outcome.DELIVERED
    assert loopback.closed.wait(10)
    result = post(t, loopback.url)
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 1)
    assert [s.connection for s in loopback.seen] == [1, 2]


RETRY = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.parametrize("loopback", [[RETRY, RETRY, OK]], indirect=True)
def test_retries_carry_the_same_idempotency_key(loopback: Loopback) -> None:
    result = post(lean(), loopback.url)
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 3)
    assert len({s.headers["idempotency-key"] for s in loopback.seen}) == 1


CHUNKED_401 = (
    b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n"
    b'9\r\n{"detail"\r\n15\r\n:"Not authenticated"}\r\n0\r\n\r\n'
)


@pytest.mark.parametrize("loopback", [[CHUNKED_401]], indirect=True)
def test_a_chunked_401_is_rejected_with_its_status(loopback: Loopback) -> None:
    result = post(lean(), loopback.url)
    assert (result.outcome, result.status, result.attempts) == (Outcome.REJECTED, 401, 1)


REPLAYED = (
    b"HTTP/1.1 200 OK\r\nIdempotent-Replayed: true\r\nconnection: close\r\n"
    b"content-length: 2\r\n\r\n{}"
)


@pytest.mark.parametrize("loopback", [[REPLAYED]], indirect=True)
def test_the_replayed_marker_says_the_server_deduplicates(loopback: Loopback) -> None:
    t = lean()
    first, second = post(t, loopback.url), post(t, loopback.url)
    assert first.deduplicates and second.deduplicates
    assert [s.connection for s in loopback.seen] == [1, 2]  # `connection: close` honoured


@pytest.mark.parametrize(
    "loopback",
    [[b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"]],
    indirect=True,
)
def test_a_500_fails_at_once_and_may_have_landed(loopback: Loopback) -> None:
    result = post(lean(), loopback.url)
    assert (result.outcome, result.status, result.attempts) == (Outcome.FAILED, 500, 1)
    assert result.maybe_landed


BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.parametrize("loopback", [[None, BAD_REQUEST]], indirect=True)
def test_a_connection_closed_without_an_answer_is_retried_and_may_have_landed(
    loopback: Loopback,
) -> None:
    result = post(lean(), loopback.url)
    assert (result.outcome, result.status, result.attempts) == (Outcome.REJECTED, 400, 2)
    assert result.maybe_landed  # the first attempt reached the server, its fate unknown
    assert [s.connection for s in loopback.seen] == [1, 2]


@pytest.mark.parametrize("loopback", [["hang"]], indirect=True)
def test_a_server_that_never_answers_is_cut_at_the_deadline(loopback: Loopback) -> None:
    result = post(lean(request_timeout=0.2, retry_deadline=0.3), loopback.url)
    assert result.outcome is Outcome.FAILED and result.maybe_landed
    assert "Timeout" in result.reason


def test_a_refused_connection_never_reached_the_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening
        result = post(lean(retry_deadline=0.2), url)
    assert result.outcome is Outcome.FAILED and not result.maybe_landed
    assert result.reason.startswith("Connect")


@pytest.mark.parametrize("loopback", [[OK]], indirect=True)
@pytest.mark.parametrize("token", ["tok\r\nX-Injected: 1", "tok\x1b", "tøk"])
def test_a_token_http_cannot_carry_is_refused_before_sending(
    loopback: Loopback, token: str
) -> None:
    result = post(lean(), loopback.url, token=token)
    assert (result.outcome, result.reason) == (Outcome.REJECTED, UNSENDABLE)
    assert loopback.seen == []


def test_the_lean_client_serves_only_plain_http_without_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _http11.usable_for("http://127.0.0.1:8237")
    assert _http11.usable_for("http://[::1]:8237/prefix")
    assert not _http11.usable_for("https://example.com")
    assert not _http11.usable_for("http://user:pw@example.com")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert not _http11.usable_for("http://127.0.0.1:8237")


def test_answers_are_parsed_whatever_their_framing() -> None:
    def answer(raw: bytes, limit: int = 64) -> tuple[_http11.Answer, bool]:
        a, b = socket.socketpair()
        with a, b:
            a.sendall(raw)
            a.shutdown(socket.SHUT_WR)
            return _http11._read_answer(b, time.monotonic() + 5, limit)

    got, keep = answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert (got.status, got.head, keep) == (200, b'{"count":2}', True)
    got, keep = answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    assert (got.head, keep) == (b"until the end", False)
    got, keep = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 100, limit=10)
    assert (got.head, keep) == (b"x" * 10, False)  # the rest is never read
    got, keep = answer(b"HTTP/1.0 204 No Content\r\n\r\n")
    assert (got.status, keep) == (204, False)
    with pytest.raises(AttemptFailed, match="RemoteProtocolError"):
        answer(b"garbage\r\n\r\n")
    with pytest.raises(AttemptFailed, match="RemoteProtocolError"):
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")


# --------------------------------------------------------------------------- the sender


class Keeper:
    def __init__(self) -> None:
        self.refused: list[tuple[str, bool]] = []
        self.unsettled: list[tuple[str, bool]] = []

    def keep_refused(self, why: str, maybe_landed: bool = False) -> None:
        self.refused.append((why, maybe_landed))

    def keep_unsettled(self, why: str, maybe_landed: bool) -> None:
        self.unsettled.append((why, maybe_landed))

    def server_deduplicates(self, server: str, deduplicates: bool) -> None:
        pass

    def resume_due(self) -> bool:
        return False

    def resume(self, deadline: float) -> object:
        return None


SERVER = "http://127.0.0.1:9"
DEST = Destination(RUN, SERVER, "tok", b"")


def send(status: int, give_up_at: float = math.inf) -> tuple[EventQueue, Keeper, list[bytes]]:
    """Queue `EVENTS`, let a sender take and post them once against a mock answering
    `status`; the queue, the keeper and the bodies the mock received."""
    bodies: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(status, json={"detail": "no"})

    queue = EventQueue(64)
    keeper = Keeper()
    transport = Transport(1.0, 0.0, http_transport=httpx.MockTransport(answer))
    sender = Sender(
        queue,
        transport,
        DeliveryHealth(queue),
        64,
        0.01,
        lambda: give_up_at,
        lambda reason: None,
        keeper,
    )
    for event in EVENTS:
        queue.append(DEST, event)
    batch = queue.take(64, 0.01)
    assert batch is not None
    sender._send(batch)
    queue.done()
    return queue, keeper, bodies


def test_a_delivered_batch_is_one_body_and_counted_sent() -> None:
    queue, keeper, bodies = send(200)
    assert bodies == [batch_body(EVENTS)]
    stats = queue.snapshot(0, None)
    assert (stats.sent, stats.dropped_total, stats.batches) == (2, 0, 1)
    assert keeper.refused == keeper.unsettled == []


@pytest.mark.parametrize("code", [401, 403])
def test_a_credentials_refusal_is_kept_not_dropped(code: int) -> None:
    _, keeper, _ = send(code)
    assert len(keeper.refused) == 1 and "check the token" in keeper.refused[0][0]


def test_a_500_is_kept_as_maybe_landed() -> None:
    _, keeper, _ = send(500)
    assert len(keeper.refused) == 1 and keeper.refused[0][1] is True


def test_a_failure_while_leaving_keeps_everything_unsettled() -> None:
    _, keeper, _ = send(503, give_up_at=time.monotonic())
    assert len(keeper.unsettled) == 1 and "exit budget" in keeper.unsettled[0][0]


# --------------------------------------------------------------------------- deadlines


def test_a_spool_deliverers_attempts_end_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender's own attempts may outlive the exit deadline by `SPILL_GRACE` (so the exit
    spill finds them unsettled); a deliverer's may not: an exit that resumes its spool or
    adopts a child's would otherwise overrun its budget by that grace."""
    asked: list[float] = []

    def attempt(
        self: Transport, server: str, url: str, body: bytes, headers: object, deadline: float
    ) -> _http11.Answer:
        asked.append(deadline)
        return _http11.Answer(200, {}, b"")

    monkeypatch.setattr(Transport, "_attempt", attempt)
    t = Transport(60.0, 60.0)
    give_up_at = time.monotonic() + 10.0
    t.post(SERVER, RUN, None, b"{}", lambda: give_up_at)
    assert asked[-1] == pytest.approx(give_up_at + _transport.SPILL_GRACE, abs=0.001)
    t.post(SERVER, RUN, None, b"{}", lambda: give_up_at, grace=0.0)
    assert asked[-1] <= give_up_at


def test_resuming_a_spool_never_outlives_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exit that resumes its own spool (or adopts a child's) within its budget: every
    attempt's deadline is the budget's, not the budget plus the sender's grace."""
    asked: list[float] = []

    def attempt(
        self: Transport, server: str, url: str, body: bytes, headers: object, deadline: float
    ) -> _http11.Answer:
        asked.append(deadline)
        return _http11.Answer(200, {}, b"")

    monkeypatch.setattr(Transport, "_attempt", attempt)
    queue = EventQueue(64)
    for event in EVENTS:
        queue.append(DEST, event)
    spill = Spill("p1-abcd", 1 << 20)
    assert spill.spill_unsettled(queue, "test", maybe_landed=False) == len(EVENTS)
    budget = time.monotonic() + 10.0
    result = spill.resume(Transport(60.0, 60.0), budget, lambda server: None)
    assert result.complete and asked and max(asked) <= budget


# --------------------------------------------------------------------------- batching


def test_a_batch_is_grouped_by_destination_in_publish_order() -> None:
    other = Destination(str(uuid.uuid4()), SERVER, None, b"")
    twin = Destination(RUN, SERVER, "tok", b"")  # equal to DEST, another object
    queue = EventQueue(64)
    for dest, event in [(DEST, b"1"), (other, b"2"), (twin, b"3"), (DEST, b"4")]:
        queue.append(dest, event)
    batch = queue.take(3, 0.0)
    assert batch is not None and [e for _, e in batch] == [b"1", b"2", b"3"]
    assert group_by_destination(batch) == [(DEST, [b"1", b"3"]), (other, [b"2"])]
    rest = queue.take(64, 0.0)
    assert rest is not None and rest[0][0] is DEST
    assert group_by_destination(rest) == [(DEST, [b"4"])]
