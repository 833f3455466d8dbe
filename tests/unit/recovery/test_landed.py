"""`_recovery/landed`: before resending a batch whose fate is unknown, read the run's
stream and send only what it lacks; one replay per run per pass; unknown when unreadable."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import httpx
import pytest
from helpers.mock_server import SERVER, StoringServer, event_bytes

from zstream_mp._recovery import landed
from zstream_mp._recovery.landed import NOT_YET, History, signature

RUN = str(uuid.uuid4())
LONG_AGO = time.time() - 3600  # sent long before: no settling wait


def _deadline(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def _history(server: StoringServer) -> History:
    return History(httpx.MockTransport(server))


def _stored(server: StoringServer, *seqs: int) -> None:
    server.stored.extend(json.loads(event_bytes(s, RUN)) for s in seqs)


def test_what_the_stream_holds_is_not_sent_again() -> None:
    server = StoringServer()
    _stored(server, 0, 1, 2)
    batch = [event_bytes(s, RUN) for s in range(5)]
    lacking = _history(server).missing(SERVER, RUN, None, batch, LONG_AGO, _deadline())
    assert lacking == batch[3:]


def test_a_batch_that_fully_landed_lacks_nothing() -> None:
    server = StoringServer()
    _stored(server, 0, 1)
    batch = [event_bytes(s, RUN) for s in range(2)]
    assert _history(server).missing(SERVER, RUN, None, batch, LONG_AGO, _deadline()) == []


def test_the_stream_is_read_with_the_token_at_the_runs_stream_url() -> None:
    server = StoringServer()
    _history(server).missing(SERVER, RUN, "tok-7", [event_bytes(0, RUN)], LONG_AGO, _deadline())
    (request,) = server.streams
    assert request.headers["authorization"] == "Bearer tok-7"
    assert request.headers["accept"] == "text/event-stream"
    assert RUN in request.url.path and request.url.path.endswith("/stream")


def test_one_replay_serves_every_batch_of_the_run_in_a_pass() -> None:
    server = StoringServer()
    _stored(server, 0)
    history = _history(server)
    history.missing(SERVER, RUN, None, [event_bytes(0, RUN)], LONG_AGO, _deadline())
    history.missing(SERVER, RUN, None, [event_bytes(1, RUN)], LONG_AGO, _deadline())
    assert len(server.streams) == 1
    other = str(uuid.uuid4())
    history.missing(SERVER, other, None, [event_bytes(0, other)], LONG_AGO, _deadline())
    assert len(server.streams) == 2  # another run: its own replay


def test_a_batch_sent_after_the_replay_was_read_gets_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(landed, "SETTLE", 0.0)
    server = StoringServer()
    history = _history(server)
    history.missing(SERVER, RUN, None, [event_bytes(0, RUN)], LONG_AGO, _deadline())
    sent_after_the_replay = time.time() + 0.001
    history.missing(SERVER, RUN, None, [event_bytes(0, RUN)], sent_after_the_replay, _deadline())
    assert len(server.streams) == 2


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_an_unreadable_stream_is_unknown(status: int) -> None:
    server = StoringServer()
    server.stream_status = status
    batch = [event_bytes(0, RUN)]
    assert _history(server).missing(SERVER, RUN, None, batch, LONG_AGO, _deadline()) is None


def test_no_server_is_unknown() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    history = History(httpx.MockTransport(refused))
    assert history.missing(SERVER, RUN, None, [event_bytes(0)], LONG_AGO, _deadline()) is None


def test_an_event_that_is_not_json_makes_the_answer_unknown() -> None:
    server = StoringServer()
    assert _history(server).missing(SERVER, RUN, None, [b"{not"], LONG_AGO, _deadline()) is None


def test_too_early_to_tell_with_no_time_to_wait_is_not_yet_and_reads_nothing() -> None:
    server = StoringServer()
    just_sent = time.time()
    result = _history(server).missing(
        SERVER, RUN, None, [event_bytes(0, RUN)], just_sent, _deadline(1.0)
    )
    assert result is NOT_YET and server.streams == []


def test_no_time_left_for_a_replay_is_not_yet() -> None:
    server = StoringServer()
    result = _history(server).missing(
        SERVER, RUN, None, [event_bytes(0, RUN)], LONG_AGO, _deadline(landed.QUIET / 2)
    )
    assert result is NOT_YET and server.streams == []


def test_an_event_is_recognised_by_kind_correlation_index_and_payload_only() -> None:
    a = {"pipeline_run_id": "r1", "step_run_id": None, "kind": "k", "payload": {"x": 1, "y": 2}}
    b = {"payload": {"y": 2, "x": 1}, "kind": "k", "pipeline_run_id": "r2", "step_name": "s"}
    assert signature(a) == signature(b)
    assert signature(a) != signature({**a, "kind": "other"})
    assert signature(a) != signature({**a, "correlation_id": "c"})
    assert signature(a) != signature({**a, "index": 3})
    assert signature(a) != signature({**a, "payload": {"x": 1}})


def test_a_frame_split_over_several_data_lines_and_junk_frames_are_read() -> None:
    event = {"kind": "event", "payload": {"seq": 9}}
    body = (
        'data: {"kind": "event",\ndata:  "payload": {"seq": 9}}\n\n'
        "data: not json\n\n"
        'data: ["a list"]\n\n'
        ": a comment\n\n"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    seen = landed.replay(SERVER, RUN, None, 5.0, httpx.MockTransport(handler))
    assert seen == {signature(event)}


def _slow_sse_server(head_delay: float, frames: list[bytes]) -> tuple[str, threading.Thread]:
    """A loopback server whose answer's head comes after `head_delay` seconds, then
    `frames` with a short pause between them, then silence (an open run's stream)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.recv(65536)
            time.sleep(head_delay)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for frame in frames:
                body = b"data: " + frame + b"\n\n"
                conn.sendall(b"%x\r\n%s\r\n" % (len(body), body))
                time.sleep(0.1)
            time.sleep(2 * landed.QUIET)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{port}", thread


def test_a_slow_answer_head_is_not_taken_for_an_empty_history() -> None:
    """The quiet window ends the history only between frames: a loaded server that takes
    longer than it to answer must not make every stored event look missing (a resend,
    then a duplicate on a server that does not deduplicate)."""
    frames = [event_bytes(s, RUN) for s in range(3)]
    url, thread = _slow_sse_server(2 * landed.QUIET, frames)
    seen = landed.replay(url, RUN, None, budget=10.0)
    assert isinstance(seen, set)
    assert seen == {signature(json.loads(f)) for f in frames}
    thread.join(timeout=10)
