"""50 concurrent subscribers on one run while 10,000 events are posted (memory and Redis).

Each subscriber must receive every event exactly once and in order, then `end`; a
subscriber resuming from a mid-stream id must get exactly the rest. Posting is paced by
the slowest subscriber (at most `WINDOW` events ahead) because this is a delivery test,
not an overload test: the server's 1,024-entry subscriber queue is allowed to drop with a
`gap` frame when a reader stalls, and that path is not what is checked here.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from helpers.redis import RunningRedis
from helpers.servers import RunningServer, start_server

SUBSCRIBERS = 50
EVENTS = 10_000
BATCH = 100
WINDOW = 600
DEADLINE = 150.0

_FRAME = re.compile(rb"id: ([0-9-]+)\nevent: ([^\n]*)\ndata: ([^\n]*)\n\n")
_SEQ = re.compile(rb'"payload":\{"seq":(\d+)\}')


class Reader(threading.Thread):
    """One SSE subscriber: records (id, seq) of every event frame, stops at `end`."""

    def __init__(
        self,
        url: str,
        path: str,
        headers: dict[str, str] | None = None,
        stop_after: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.headers = url, path, headers or {}
        self.stop_after = stop_after
        self.ids: list[bytes] = []
        self.seqs: list[int] = []
        self.others: list[bytes] = []  # non-event frames other than pings and end
        self.ended = False
        self.status = 0
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ready.set()

    def _run(self) -> None:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=DEADLINE)
        conn.request("GET", self.path, headers={"Accept": "text/event-stream", **self.headers})
        resp = conn.getresponse()
        self.status = resp.status
        self.ready.set()
        buf = b""
        try:
            while True:
                chunk = resp.read1(262144)
                if not chunk:
                    return
                buf += chunk
                cut = buf.rfind(b"\n\n")
                if cut < 0:
                    continue
                block, buf = buf[: cut + 2], buf[cut + 2 :]
                for frame in block.split(b"\n\n")[:-1]:
                    if self._frame(frame + b"\n\n"):
                        return
        finally:
            conn.close()

    def _frame(self, frame: bytes) -> bool:
        if frame.startswith(b":"):
            return False
        if frame == b"event: end\ndata: {}\n\n":
            self.ended = True
            return True
        m = _FRAME.fullmatch(frame)
        seq = _SEQ.search(m.group(3)) if m and m.group(2) == b"scale" else None
        if m is None or seq is None:
            self.others.append(frame)
            return False
        self.ids.append(m.group(1))
        self.seqs.append(int(seq.group(1)))
        return self.stop_after is not None and len(self.seqs) >= self.stop_after


@pytest.fixture(params=["memory", "redis"])
def scale_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    if request.param == "memory":
        with start_server(heartbeat=5) as srv:
            yield srv
    else:
        redis: RunningRedis = request.getfixturevalue("redis")
        with start_server(broker=redis.url, heartbeat=5) as srv:
            yield srv


def _bodies(run_id: str) -> list[bytes]:
    out = []
    for start in range(0, EVENTS, BATCH):
        events = [
            {
                "pipeline_run_id": run_id,
                "step_run_id": None,
                "step_name": "scale",
                "kind": "scale",
                "correlation_id": None,
                "index": i,
                "payload": {"seq": i},
            }
            for i in range(start, start + BATCH)
        ]
        out.append(json.dumps({"events": events}, separators=(",", ":")).encode())
    return out


def test_fifty_subscribers_ten_thousand_events(scale_server: RunningServer) -> None:
    url = scale_server.url
    client = httpx.Client(base_url=url, headers=scale_server.headers, timeout=30)
    run_id = str(uuid.uuid4())
    r = client.post("/api/v1/zstream/runs", json={"id": run_id})
    assert r.status_code == 201, r.text
    stream = f"/api/v1/runs/{run_id}/events/stream"
    readers = [Reader(url, stream, scale_server.headers) for _ in range(SUBSCRIBERS)]
    for rd in readers:
        rd.start()
    for rd in readers:
        assert rd.ready.wait(30) and rd.status == 200, (rd.status, rd.error)

    deadline = time.monotonic() + DEADLINE
    posted = 0
    last_ids: list[str] = []
    for body in _bodies(run_id):
        while min(len(rd.seqs) for rd in readers) < posted - WINDOW:
            assert time.monotonic() < deadline, "subscribers stopped making progress"
            assert not any(rd.error for rd in readers), [rd.error for rd in readers]
            time.sleep(0.005)
        resp = client.post(
            f"/api/v1/runs/{run_id}/events",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 200, resp.text
        last_ids.append(resp.json()["last_id"])
        posted += BATCH
    assert client.post(f"/api/v1/zstream/runs/{run_id}/end").status_code == 200
    for rd in readers:
        rd.join(max(1.0, deadline - time.monotonic()))
        assert not rd.is_alive(), f"subscriber still open: {len(rd.seqs)} events"

    expected = list(range(EVENTS))
    reference_ids = readers[0].ids
    for n, rd in enumerate(readers):
        assert rd.error is None, rd.error
        assert rd.others == [], (n, rd.others[:3])
        assert rd.ended, n
        assert rd.seqs == expected, (n, len(rd.seqs))
        assert rd.ids == reference_ids, n
    assert [reference_ids[i] for i in range(BATCH - 1, EVENTS, BATCH)] == [
        i.encode() for i in last_ids
    ]

    # resume from a mid-stream id: exactly the rest, by since= and by Last-Event-ID
    mid = EVENTS // 2 - 1
    cursor = reference_ids[mid].decode()
    by_since = Reader(url, f"{stream}?since={cursor}", scale_server.headers)
    by_header = Reader(url, stream, {**scale_server.headers, "Last-Event-ID": cursor})
    for rd in (by_since, by_header):
        rd.start()
    for rd in (by_since, by_header):
        rd.join(60)
        assert rd.error is None and not rd.is_alive()
        assert rd.ended and rd.others == []
        assert rd.seqs == expected[mid + 1 :]
        assert rd.ids == reference_ids[mid + 1 :]
    client.close()
