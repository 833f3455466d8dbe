"""Capacity: many idle or stalled subscribers never starve ingest, and client-made state stays
bounded. Real sockets on loopback against real servers (subprocess or `EmbeddedServer`, whose
state the bounded-memory tests inspect)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from helpers.redis import RunningRedis
from helpers.servers import start_server

from zstream_mp.server import EmbeddedServer, ServerConfig


@pytest.fixture(scope="module", autouse=True)
def _enough_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


def _addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def _open_stream(
    addr: tuple[str, int], run: str, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """An SSE GET on a raw socket; returns once the status line and headers are in."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, addr)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    writer.write(
        f"GET /api/v1/runs/{run}/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    return reader, writer, head


async def _many_streams(
    addr: tuple[str, int], runs: list[str], *, rcvbuf: int | None = None, at_once: int = 50
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]]:
    gate = asyncio.Semaphore(at_once)

    async def one(run: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        async with gate:
            return await _open_stream(addr, run, rcvbuf=rcvbuf)

    return list(await asyncio.gather(*(one(r) for r in runs)))


def _post(client: httpx.Client, run: str, **payload: Any) -> httpx.Response:
    return client.post(
        f"/api/v1/runs/{run}/events",
        json={"events": [{"pipeline_run_id": run, "kind": "k", "payload": payload}]},
        timeout=30,
    )


# -- Redis: idle subscribers on many runs do not starve ingest -----------------------------
@pytest.mark.redis
def test_250_idle_subscribers_on_distinct_runs_do_not_starve_ingest(redis: RunningRedis) -> None:
    """Before: one pooled connection per subscribed run in XREAD BLOCK; ~200 idle clients made
    every POST answer `503 Broker publish failed` (Too many connections)."""
    runs = [str(uuid.uuid4()) for _ in range(250)]
    with start_server(broker=redis.url, heartbeat=5) as srv:

        async def scenario() -> None:
            streams = await _many_streams(_addr(srv.url), runs)
            assert all(h.startswith(b"HTTP/1.1 200") for _, _, h in streams)
            await asyncio.sleep(1.0)  # every reader would be blocked in XREAD by now
            t0 = time.monotonic()
            with httpx.Client(base_url=srv.url) as client:
                statuses = await asyncio.gather(
                    *(asyncio.to_thread(_post, client, run, seq=i) for i, run in enumerate(runs))
                )
            print(f"250 POSTs in {time.monotonic() - t0:.2f} s")
            assert [r.status_code for r in statuses] == [200] * len(runs)

            async def got_event(reader: asyncio.StreamReader) -> bytes:
                while True:
                    line = await reader.readline()
                    if line.startswith(b"data: {"):
                        return line

            lines = await asyncio.wait_for(
                asyncio.gather(*(got_event(r) for r, _, _ in streams)), 30
            )
            print(f"all delivered {time.monotonic() - t0:.2f} s after the first POST")
            for i, (run, line) in enumerate(zip(runs, lines, strict=True)):
                assert run.encode() in line and f'"seq":{i}}}'.encode() in line
            for _, w, _ in streams:
                w.close()

        asyncio.run(scenario())


# -- SSE write timeout: clients that stop reading are cut off ------------------------------
def test_100_clients_that_never_read_are_dropped_after_the_write_timeout() -> None:
    """Before: no write timeout; 100 clients that stop reading held the run's cap forever."""
    run = str(uuid.uuid4())
    with start_server(heartbeat=1, sse_write_timeout=2, max_subscribers=100) as srv:
        addr = _addr(srv.url)
        server = psutil.Process(srv.proc.pid)

        async def scenario() -> None:
            streams = await _many_streams(addr, [run] * 100, rcvbuf=4096)
            assert all(h.startswith(b"HTTP/1.1 200") for _, _, h in streams)
            status = httpx.get(f"{srv.url}/api/v1/zstream/runs/{run}").json()
            assert status["subscribers"] == 100
            refused = await _open_stream(addr, run)
            assert refused[2].startswith(b"HTTP/1.1 503")  # the per-run cap, ZenML's answer
            refused[1].close()
            ports = {w.get_extra_info("sockname")[1] for _, w, _ in streams}
            big = "x" * 60_000
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                batch = [
                    {"pipeline_run_id": run, "kind": "big", "payload": {"s": big}}
                    for _ in range(16)
                ]
                r = await asyncio.to_thread(
                    httpx.post,
                    f"{srv.url}/api/v1/runs/{run}/events",
                    json={"events": batch},
                    timeout=30,
                )
                assert r.status_code == 200
                status = httpx.get(f"{srv.url}/api/v1/zstream/runs/{run}").json()
                if status["subscribers"] == 0:
                    break
                await asyncio.sleep(0.5)
            assert status["subscribers"] == 0, status
            # the connections are gone on the server side too (aborted, not left draining)
            held = {
                c.raddr.port
                for c in server.net_connections("tcp")
                if c.raddr and c.raddr.port in ports
            }
            assert not held, f"{len(held)} stalled connections still open on the server"
            fresh = await _open_stream(addr, run)
            assert fresh[2].startswith(b"HTTP/1.1 200")
            fresh[1].close()
            for _, w, _ in streams:
                w.close()

        asyncio.run(scenario())


# -- bounded state ------------------------------------------------------------------------
@pytest.fixture()
def embedded() -> Iterator[EmbeddedServer]:
    config = ServerConfig(
        port=0,
        heartbeat=30,
        idle_grace=0.2,
        max_runs=500,
        idempotency_keys=300,
        max_request_body=200_000,
        memory_max_bytes=4_000_000,  # 1,200 ended runs' streams cost ~1.4 MB of it
    )
    with EmbeddedServer(config) as srv:
        yield srv


def test_20000_random_stream_gets_leave_no_entries(embedded: EmbeddedServer) -> None:
    """Before: every GET of an unknown run created a memory-broker stream, kept forever."""
    addr = _addr(embedded.url)

    async def scenario() -> None:
        gate = asyncio.Semaphore(64)

        async def one() -> None:
            async with gate:
                _, writer, head = await _open_stream(addr, str(uuid.uuid4()))
                assert head.startswith(b"HTTP/1.1 200")
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        await asyncio.gather(*(one() for _ in range(20_000)))

    asyncio.run(scenario())
    state = embedded.state
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and state.broadcaster.subscribers_total:
        time.sleep(0.1)
    time.sleep(0.5)  # idle grace: sessions are forgotten
    broker: Any = state.broker
    assert broker.stream_count == 0
    assert len(state.runs) == 0
    assert state.broadcaster.subscribers_total == 0
    assert not state.broadcaster._sessions


def test_runs_idempotency_and_memory_broker_bytes_are_bounded(embedded: EmbeddedServer) -> None:
    """Before: ended runs and 10 M idempotency keys of any length kept; no byte cap."""
    url = embedded.url
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(1200):
            run = str(uuid.uuid4())
            assert client.post(f"/api/v1/zstream/runs/{run}/end").status_code == 200
        state = embedded.state
        assert len(state.runs) <= 500
        run = str(uuid.uuid4())
        for i in range(1000):
            r = client.post(
                f"/api/v1/runs/{run}/events",
                json={"events": [{"pipeline_run_id": run, "kind": "k", "payload": {"i": i}}]},
                headers={"Idempotency-Key": f"key-{i}"},
            )
            assert r.status_code == 200
        idempotency: Any = state.idempotency
        assert len(idempotency) <= 300
        # the memory broker's byte cap: 503 with ZenML's Retry-After, never a 500
        big = {"pipeline_run_id": run, "kind": "big", "payload": {"s": "x" * 60_000}}
        statuses = []
        for _ in range(60):
            r = client.post(f"/api/v1/runs/{run}/events", json={"events": [big, big]})
            statuses.append(r.status_code)
            if r.status_code != 200:
                assert r.status_code == 503 and r.headers["retry-after"] == "5"
                assert "memory broker is full" in r.json()["detail"]
                break
        assert statuses[-1] == 503 and 200 in statuses
        broker: Any = state.broker
        assert broker.bytes_held <= 4_000_000
