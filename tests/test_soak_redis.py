"""Soak on the Redis broker: 1,000 idle subscribers on 1,000 runs while 4 publisher processes
publish at full rate for 60 s.

Checked: no 5xx (no publisher ever retried, nothing `failed` or `rejected`), every event a
publisher counts as `sent` (answered 200) delivered exactly once to its run's counting
subscriber (by identity: worker, seq), the idle subscribers still connected, and the
server's resident memory bounded. Publishers outrun their queue by design; what they drop
is counted as `overflow` by the documented drop policy, never delivered, never duplicated.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from helpers.redis import RunningRedis
from helpers.servers import REPO, start_server

pytestmark = pytest.mark.redis

IDLE = 1000
PUBLISHERS = 4
SECONDS = 60.0
RSS_CEILING = 250 * 1024 * 1024  # growth allowed over the idle baseline

_IDENTITY = re.compile(rb'"payload":\{"w":(\d+),"seq":(\d+)\}')

_PUBLISHER = textwrap.dedent(
    """
    import json, sys, time
    import zstream_mp
    run, server, w, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    zstream_mp.bind(run, server=server)
    seq, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            zstream_mp.publish({"w": w, "seq": seq}, kind="tick")
            seq += 1
        time.sleep(0.0005)  # let the sender thread have the GIL now and then
    ok = zstream_mp.flush(60.0)
    s = zstream_mp.stats()
    print(json.dumps({"ok": ok, "published": s.published, "sent": s.sent, "queued": s.queued,
                      "retries": s.retries, "dropped": dict(s.dropped)}), flush=True)
    """
)


class Counter(threading.Thread):
    """A subscriber on one publisher's run: every (worker, seq) it receives, until `end`."""

    def __init__(self, url: str, run: str) -> None:
        super().__init__(daemon=True)
        self.url, self.run_id = url, run
        self.seen: dict[tuple[int, int], int] = {}
        self.gaps = 0
        self.ended = False
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            path = f"{self.url}/api/v1/runs/{self.run_id}/events/stream"
            with httpx.stream("GET", path, timeout=httpx.Timeout(120)) as resp:
                assert resp.status_code == 200
                self.ready.set()
                tail = b""
                for chunk in resp.iter_raw():
                    data = tail + chunk
                    cut = data.rfind(b"\n\n") + 2
                    block, tail = data[:cut], data[cut:]
                    for m in _IDENTITY.finditer(block):
                        key = (int(m.group(1)), int(m.group(2)))
                        self.seen[key] = self.seen.get(key, 0) + 1
                    self.gaps += block.count(b"event: gap\n")
                    if b"event: end\n" in block:
                        self.ended = True
                        return
        except BaseException as exc:
            self.error = exc
            self.ready.set()


def _idle_subscribers(addr: tuple[str, int], runs: list[str], stop: threading.Event) -> list[int]:
    """Hold one idle SSE connection per run until `stop`; returns how many were still open."""

    async def main() -> list[int]:
        gate = asyncio.Semaphore(100)

        async def one(run: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with gate:
                reader, writer = await asyncio.open_connection(*addr)
                writer.write(
                    f"GET /api/v1/runs/{run}/events/stream HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\n\r\n".encode()
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                assert head.startswith(b"HTTP/1.1 200"), head
                return reader, writer

        conns = await asyncio.gather(*(one(r) for r in runs))
        opened.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        alive = [0 if r.at_eof() else 1 for r, _ in conns]
        for _, w in conns:
            w.close()
        return alive

    return asyncio.run(main())


opened = threading.Event()


def test_soak_1000_idle_subscribers_4_publishers_60s(redis: RunningRedis) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    with start_server(
        broker=redis.url, max_stream_length=5_000_000, max_subscribers_total=2000
    ) as srv:
        parts = urlsplit(srv.url)
        assert parts.hostname and parts.port
        addr = (parts.hostname, parts.port)
        server = psutil.Process(srv.proc.pid)
        stop = threading.Event()
        alive: list[int] = []
        idle = threading.Thread(
            target=lambda: alive.extend(
                _idle_subscribers(addr, [str(uuid.uuid4()) for _ in range(IDLE)], stop)
            ),
            daemon=True,
        )
        idle.start()
        assert opened.wait(60), "idle subscribers did not connect"
        runs = [str(uuid.uuid4()) for _ in range(PUBLISHERS)]
        counters = [Counter(srv.url, run) for run in runs]
        for c in counters:
            c.start()
            assert c.ready.wait(30) and c.error is None, c.error
        base = server.memory_info().rss
        peak = base
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _PUBLISHER, run, srv.url, str(w), str(SECONDS)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            for w, run in enumerate(runs)
        ]
        while any(p.poll() is None for p in procs):
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.5)
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            for run in runs:
                assert client.post(f"/api/v1/zstream/runs/{run}/end").status_code == 200
        for c in counters:
            c.join(120)
            peak = max(peak, server.memory_info().rss)
        stop.set()
        idle.join(30)

    for w, (res, c) in enumerate(zip(results, counters, strict=True)):
        assert c.error is None and c.ended, (w, c.error)
        assert res["ok"] and res["queued"] == 0, res
        assert res["retries"] == 0, f"publisher {w} retried: the server answered 5xx or stalled"
        assert res["dropped"]["failed"] == res["dropped"]["rejected"] == 0, res
        assert res["sent"] + sum(res["dropped"].values()) == res["published"], res
        dupes = [k for k, n in c.seen.items() if n > 1]
        assert not dupes, f"publisher {w}: {len(dupes)} events delivered twice"
        assert all(k[0] == w and k[1] < res["published"] for k in c.seen)
        assert len(c.seen) == res["sent"], (w, len(c.seen), res)
        assert c.gaps == 0
    assert sum(alive) == IDLE, f"{IDLE - sum(alive)} idle subscribers were disconnected"
    assert peak - base < RSS_CEILING, f"server RSS grew {(peak - base) >> 20} MiB"
    sent = sum(r["sent"] for r in results)
    dropped = sum(sum(r["dropped"].values()) for r in results)
    print(
        f"soak: {sent} events sent and delivered once, {dropped} dropped by the publishers' "
        f"queue policy; server RSS +{(peak - base) >> 20} MiB"
    )
