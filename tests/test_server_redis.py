"""Redis Streams broker through a real redis-server: ZenML's layout, ids, outage handling."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import httpx
import pytest
from helpers.redis import RunningRedis, redis_binary, start_redis
from helpers.servers import RunningServer, start_server
from helpers.sse import frames_of, sse_body

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        redis_binary() is None, reason="redis-server binary not installed: Redis tests NOT run"
    ),
]


def _redis_cmd(port: int, *args: str) -> bytes:
    """Minimal RESP client, so the test checks Redis itself rather than our broker code."""
    parts = [f"*{len(args)}\r\n".encode()] + [
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"".join(parts))
        time.sleep(0.1)
        return s.recv(1 << 20)


def test_layout_ids_and_frames(redis: RunningRedis, redis_server: RunningServer) -> None:
    run = str(uuid.uuid4())
    ev = {"pipeline_run_id": run, "kind": "token", "payload": {"t": "é", "big": 1e20}}
    r = httpx.post(f"{redis_server.url}/api/v1/runs/{run}/events", json={"events": [ev, ev]})
    assert r.status_code == 200
    last = r.json()["last_id"]
    ms, seq = last.split("-")
    assert ms.isdigit() and seq.isdigit()
    key = f"zenml:stream:server:zstream-mp:run:{run}"
    raw = _redis_cmd(redis.port, "XRANGE", key, "-", "+")
    assert (
        f'{{"type":"event","event":{{"pipeline_run_id":"{run}","step_run_id":null,"step_name":null,"kind":"token","correlation_id":null,"index":null,"payload":{{"t":"é","big":1e20}}}}}}'.encode()
        in raw
    )
    assert b"\r\np\r\n" in raw  # field name
    ttl = int(_redis_cmd(redis.port, "TTL", key).strip()[1:])
    assert 3500 < ttl <= 3600
    httpx.post(f"{redis_server.url}/api/v1/zstream/runs/{run}/end")
    assert b'{"type":"end"}' in _redis_cmd(redis.port, "XRANGE", key, "-", "+")
    _, _, body = sse_body(f"{redis_server.url}/api/v1/runs/{run}/events/stream")
    frames = frames_of(body)
    assert [f.get("id") for f in frames][-1] is None and frames[-1]["event"] == "end"
    assert frames[1]["id"] == last
    _, _, body = sse_body(
        f"{redis_server.url}/api/v1/runs/{run}/events/stream", params={"since": frames[0]["id"]}
    )
    assert [f.get("id") for f in frames_of(body)] == [last, None]
    r = httpx.get(f"{redis_server.url}/api/v1/runs/{run}/events/stream", params={"since": "12"})
    assert r.status_code == 400
    assert r.json() == {
        "detail": [
            "ValueError",
            "cursor '12' is not a valid Redis stream id (expected `<ms>-<seq>`)",
        ]
    }


def test_a_batch_is_appended_in_order_and_trimmed_to_the_stream_length(
    redis: RunningRedis,
) -> None:
    """Each batch lands whole, in order, under the ids the answer names, and the stream
    keeps about `--max-stream-length` entries (`MAXLEN ~`, as ZenML trims)."""
    run = str(uuid.uuid4())
    key = f"zenml:stream:server:zstream-mp:run:{run}"
    with start_server(broker=redis.url, max_stream_length=100) as srv:
        last_ids = []
        for start in range(0, 1000, 250):
            events = [
                {"pipeline_run_id": run, "kind": "k", "payload": {"seq": i}}
                for i in range(start, start + 250)
            ]
            r = httpx.post(f"{srv.url}/api/v1/runs/{run}/events", json={"events": events})
            assert r.status_code == 200 and r.json()["count"] == 250
            last_ids.append(r.json()["last_id"])
        length = int(_redis_cmd(redis.port, "XLEN", key).strip()[1:])
        assert 100 <= length < 1000, length
        newest = _redis_cmd(redis.port, "XREVRANGE", key, "+", "-", "COUNT", "1")
        assert last_ids[-1].encode() in newest and b'"seq":999' in newest
        httpx.post(f"{srv.url}/api/v1/zstream/runs/{run}/end")
        _, _, body = sse_body(f"{srv.url}/api/v1/runs/{run}/events/stream")
        seqs = [
            json.loads(f["data"])["payload"]["seq"]
            for f in frames_of(body)
            if f.get("event") == "k"
        ]
        assert seqs == list(range(1000 - length, 1000))  # the newest, in order, once


def test_a_publish_keeps_the_run_summary(redis: RunningRedis) -> None:
    """The summary the append updates in the same command (no `Idempotency-Key`): counts,
    steps, processes, times, the run list, and the end with its id; read by a new server
    process, so it comes from Redis."""
    run = str(uuid.uuid4())
    events = [
        {
            "pipeline_run_id": run,
            "step_name": f"s{i % 2}",
            "kind": "k",
            "payload": {"pid": 10 + i % 3},
        }
        for i in range(6)
    ]
    with start_server(broker=redis.url) as srv:
        for chunk in (events[:4], events[4:]):
            r = httpx.post(f"{srv.url}/api/v1/runs/{run}/events", json={"events": chunk})
            assert r.status_code == 200
        end = httpx.post(f"{srv.url}/api/v1/zstream/runs/{run}/end")
        assert end.status_code == 200
    with start_server(broker=redis.url) as srv:
        status = httpx.get(f"{srv.url}/api/v1/zstream/runs/{run}").json()
        listed = httpx.get(
            f"{srv.url}/api/v1/zstream/runs", params={"order": "newest", "limit": 1000}
        ).json()
    newest = _redis_cmd(
        redis.port, "XREVRANGE", f"zenml:stream:server:zstream-mp:run:{run}", "+", "-", "COUNT", "1"
    )
    assert status["events"] == 6 and status["ended"] and status["state"] == "ended"
    assert status["steps"] == ["s0", "s1"] and status["processes"] == 3
    assert status["first_event"] <= status["last_event"]
    assert status["last_event_id"] is not None and status["last_event_id"].encode() in newest
    assert run in [r["id"] for r in listed["runs"]]


def test_outage_503_gap_and_resume() -> None:
    redis = start_redis()
    port = redis.port
    try:
        with start_server(broker=redis.url, heartbeat=1) as srv:
            run = str(uuid.uuid4())
            url = f"{srv.url}/api/v1/runs/{run}/events"

            def post(tag: str) -> httpx.Response:
                return httpx.post(
                    url,
                    json={
                        "events": [{"pipeline_run_id": run, "kind": "o", "payload": {"phase": tag}}]
                    },
                    timeout=20,
                )

            assert post("before").status_code == 200
            body: list[bytes] = []
            lines: list[str] = []

            def read() -> None:
                with httpx.stream("GET", f"{url}/stream", timeout=60) as resp:
                    for line in resp.iter_lines():
                        lines.append(line)
                body.append("".join(f"{line}\n" for line in lines).encode())

            t = threading.Thread(target=read)
            t.start()
            time.sleep(0.8)
            redis.stop()
            r = post("during")
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.json() == {"detail": "Broker publish failed."}
            time.sleep(2.5)
            redis = start_redis(port=port)
            deadline = time.monotonic() + 20
            while post("after").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            httpx.post(f"{srv.url}/api/v1/zstream/runs/{run}/end")
            t.join(30)
            assert body, lines
            frames = [f for f in frames_of(body[0]) if "event" in f]
            kinds = [(f["event"], f["data"]) for f in frames]
            assert kinds[0][0] == "o" and '"before"' in kinds[0][1]
            assert ("gap", '{"reason": "outage"}') in kinds
            assert any('"after"' in d for k, d in kinds if k == "o")
            assert kinds[-1] == ("end", "{}")
    finally:
        redis.stop()
