"""SSE behaviour of our server: replay, live fan-out, filters, resume, end/close, shutdown."""
# ruff: noqa: E501

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from helpers.servers import RunningServer, start_server
from helpers.sse import frames_of, sse_body

from zstream_mp.consumer import Event, Gap, subscribe


def _post(srv: RunningServer, run: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = httpx.post(
        f"{srv.url}/api/v1/runs/{run}/events",
        json={"events": events},
        headers=srv.headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _end(srv: RunningServer, run: str) -> None:
    assert (
        httpx.post(f"{srv.url}/api/v1/zstream/runs/{run}/end", headers=srv.headers).status_code
        == 200
    )


def _stream(srv: RunningServer, run: str) -> str:
    return f"{srv.url}/api/v1/runs/{run}/events/stream"


def test_replay_filters_and_resume(server: RunningServer) -> None:
    run = str(uuid.uuid4())
    events = [
        {
            "pipeline_run_id": run,
            "kind": "direct",
            "correlation_id": "corr-1",
            "step_name": "probe",
            "index": 0,
            "payload": {"n": 1},
        },
        {
            "pipeline_run_id": run,
            "kind": "direct",
            "correlation_id": "corr-2",
            "payload": {"n": 2, "s": "ü"},
        },
        {"pipeline_run_id": run, "kind": "other", "correlation_id": "corr-1"},
        {"pipeline_run_id": run, "kind": "fourth"},
    ]
    # a kind an SSE event name cannot carry is refused, not stored and shown as `cursor`
    bad = {"pipeline_run_id": run, "kind": "bad\nkind"}
    refused = httpx.post(_stream(server, run)[: -len("/stream")], json={"events": [bad]})
    assert refused.status_code == 400 and refused.json()["detail"][0] == "ValueError"
    last = int(_post(server, run, events)["last_id"])
    i1, i2, i3, i4 = (str(last - 3 + k) for k in range(4))  # ids count up from a clock base
    _end(server, run)
    status, headers, body = sse_body(_stream(server, run))
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["x-accel-buffering"] == "no" and "no-cache" in headers["cache-control"]
    text = body.decode()
    assert text.startswith(
        f'id: {i1}\nevent: direct\ndata: {{"pipeline_run_id":"{run}","step_run_id":null,"step_name":"probe","kind":"direct","correlation_id":"corr-1","index":0,"payload":{{"n":1}}}}\n\n'
    )
    assert '"payload":{"n":2,"s":"ü"}' in text
    assert f"id: {i4}\nevent: fourth\n" in text
    assert text.endswith("event: end\ndata: {}\n\n")
    _, _, body = sse_body(
        _stream(server, run), params=[("kinds", "direct"), ("correlation_ids", "corr-1")]
    )
    frames = frames_of(body)
    assert [(f.get("id"), f["event"]) for f in frames] == [
        (i1, "direct"),
        (i2, "cursor"),
        (i3, "cursor"),
        (i4, "cursor"),
        (None, "end"),
    ]
    _, _, body = sse_body(_stream(server, run), params=[("kinds", "direct"), ("kinds", "other")])
    assert [f["event"] for f in frames_of(body)] == ["direct", "direct", "other", "cursor", "end"]
    _, _, body = sse_body(_stream(server, run), params={"since": i2})
    assert [f.get("id") for f in frames_of(body)] == [i3, i4, None]
    # header wins over since; an empty header falls back to since
    _, _, body = sse_body(_stream(server, run), params={"since": i1}, headers={"Last-Event-ID": i3})
    assert [f.get("id") for f in frames_of(body)] == [i4, None]
    _, _, body = sse_body(_stream(server, run), params={"since": i3}, headers={"Last-Event-ID": ""})
    assert [f.get("id") for f in frames_of(body)] == [i4, None]


def test_terminal_shortcuts_and_empty_run_end(server: RunningServer) -> None:
    run = str(uuid.uuid4())
    _end(server, run)  # empty stream: we still append the end frame (ZenML does not)
    assert sse_body(_stream(server, run))[2] == b"event: end\ndata: {}\n\n"
    run2 = str(uuid.uuid4())
    last = _post(server, run2, [{"pipeline_run_id": run2, "kind": "k"}])["last_id"]
    _end(server, run2)
    assert (
        httpx.post(f"{server.url}/api/v1/zstream/runs/{run2}/end").json()["ended"] is True
    )  # idempotent
    # events after end are accepted but never delivered
    _post(server, run2, [{"pipeline_run_id": run2, "kind": "late"}])
    _, _, body = sse_body(_stream(server, run2), params={"since": last})
    assert body == b"event: end\ndata: {}\n\n"
    assert b"late" not in sse_body(_stream(server, run2))[2]


def test_live_subscriber_gets_end_and_connection_closes(server: RunningServer) -> None:
    run = str(uuid.uuid4())
    got: list[bytes] = []

    def reader() -> None:
        got.append(sse_body(_stream(server, run), timeout=20)[2])

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.5)
    _post(server, run, [{"pipeline_run_id": run, "kind": "live", "index": i} for i in range(3)])
    time.sleep(1.3)  # heartbeat is 1 s on this server
    _end(server, run)
    t.join(20)
    assert not t.is_alive() and got
    frames = frames_of(got[0])
    assert [f.get("event") for f in frames if "event" in f] == ["live", "live", "live", "end"]
    assert {"comment": "ping"} in frames


def _collect(
    srv: RunningServer, run: str, out: dict[int, list[str]], n: int, ready: threading.Barrier
) -> None:
    items: list[str] = []
    with httpx.stream("GET", _stream(srv, run), timeout=60) as resp:
        ready.wait()
        for line in resp.iter_lines():
            if line.startswith("id: "):
                items.append(line[4:])
            if line == "event: end":
                break
    out[n] = items


@pytest.mark.parametrize("subscribers,events", [(20, 3000)])
def test_fan_out_every_event_once_in_order(
    server: RunningServer, subscribers: int, events: int
) -> None:
    run = str(uuid.uuid4())
    history = _post(
        server, run, [{"pipeline_run_id": run, "kind": "pre", "index": i} for i in range(50)]
    )  # history first
    first = int(history["last_id"]) - 49  # ids count up from a clock base
    out: dict[int, list[str]] = {}
    ready = threading.Barrier(subscribers + 1)
    threads = [
        threading.Thread(target=_collect, args=(server, run, out, i, ready))
        for i in range(subscribers)
    ]
    for t in threads:
        t.start()
    ready.wait(30)
    for start in range(0, events, 100):
        _post(
            server,
            run,
            [{"pipeline_run_id": run, "kind": "k", "index": i} for i in range(start, start + 100)],
        )
    _end(server, run)
    for t in threads:
        t.join(60)
    expected = [str(first + i) for i in range(events + 50)]
    assert len(out) == subscribers
    for items in out.values():
        assert items == expected


def test_subscriber_cap_and_shutdown() -> None:
    with start_server(max_subscribers=2, heartbeat=5) as srv:
        run = str(uuid.uuid4())
        _post(srv, run, [{"pipeline_run_id": run, "kind": "k"}])
        bodies: list[bytes] = []
        started = threading.Barrier(3)

        def reader() -> None:
            with httpx.stream("GET", _stream(srv, run), timeout=30) as resp:
                started.wait()
                bodies.append(resp.read())

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        started.wait(10)
        time.sleep(0.3)
        r = httpx.get(_stream(srv, run))
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert "per-run subscriber cap (2)" in r.json()["detail"]
        srv.stop()
        for t in threads:
            t.join(15)
        assert len(bodies) == 2
        for body in bodies:
            assert body.endswith(
                b'event: gap\ndata: {"reason": "shutdown"}\n\nevent: end\ndata: {}\n\n'
            )


def test_consumer_items_and_typed_errors(auth_server: RunningServer) -> None:
    from zstream_mp.errors import AuthenticationError, InvalidRequestError, StreamingDisabledError

    run = str(uuid.uuid4())
    _post(
        auth_server,
        run,
        [
            {
                "pipeline_run_id": run,
                "kind": "a",
                "step_name": "s",
                "correlation_id": "c",
                "index": 1,
                "payload": {"x": [1]},
            },
            {"pipeline_run_id": run, "kind": "b"},
        ],
    )
    _end(auth_server, run)
    items = list(subscribe(auth_server.url, run, token=auth_server.token))
    i1 = items[0].id if isinstance(items[0], Event) else ""
    i2 = str(int(i1) + 1)  # ids count up from a clock base
    assert items == [
        Event(i1, "a", run, None, "s", "c", 1, {"x": [1]}),
        Event(i2, "b", run, None, None, None, None, {}),
    ]
    assert [e.id for e in subscribe(auth_server.url, run, token=auth_server.token, kinds="b")] == [
        i2
    ]
    with pytest.raises(AuthenticationError):
        list(subscribe(auth_server.url, run))
    with pytest.raises(InvalidRequestError):
        list(subscribe(auth_server.url, run, token=auth_server.token, since="x"))
    with pytest.raises(InvalidRequestError):
        list(subscribe(auth_server.url, "nope", token=auth_server.token))
    with start_server(disabled=True) as off, pytest.raises(StreamingDisabledError):
        list(subscribe(off.url, run))
    assert Gap("overflow").reason == "overflow"


def test_disconnected_subscribers_are_released() -> None:
    with start_server(max_subscribers=2, heartbeat=0.2) as srv:
        run = str(uuid.uuid4())
        _post(srv, run, [{"pipeline_run_id": run, "kind": "k"}])
        for _ in range(5):  # more than the cap: each closed client must free its slot
            with httpx.stream("GET", _stream(srv, run), timeout=10) as resp:
                assert resp.status_code == 200
                next(resp.iter_lines())
        deadline = time.monotonic() + 10
        while True:
            state = httpx.get(f"{srv.url}/api/v1/zstream/runs/{run}").json()
            if state["subscribers"] == 0:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
