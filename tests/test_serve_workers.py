"""`zstream-mp serve --workers N`: N worker processes on one port and one real redis-server.

Publisher processes and `subscribe()` consumers all use the one URL; the kernel spreads
their connections over the workers. Every subscriber must see every event exactly once in
per-publisher order, also when the worker holding the most connections is SIGKILLed
mid-stream (its clients reconnect to the same port, served by the other worker, with
`Last-Event-ID`, and the supervisor starts a replacement). `--workers` with the memory
broker is refused with a clear error.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from helpers.redis import RunningRedis, redis_binary, start_redis
from helpers.servers import REPO, TEST_TOKEN, RunningServer, start_server
from test_faults import finish, start_client
from test_replicas import Consumer, assert_complete, wait_for

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        redis_binary() is None, reason="redis-server binary not installed: worker tests NOT run"
    ),
]

WORKERS = 2


def workers_of(srv: RunningServer) -> list[psutil.Process]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    return [
        p for p in psutil.Process(srv.proc.pid).children() if "spawn_main" in " ".join(p.cmdline())
    ]


def connections_on(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


@pytest.fixture
def workers_server() -> Iterator[tuple[RunningRedis, RunningServer]]:
    with (
        start_redis() as redis,
        start_server(broker=redis.url, token=TEST_TOKEN, heartbeat=1, workers=WORKERS) as srv,
    ):
        wait_for(lambda: len(workers_of(srv)) == WORKERS, "the workers to start")
        yield redis, srv


def test_workers_deliver_everything_once_and_survive_a_sigkilled_worker(
    workers_server: tuple[RunningRedis, RunningServer], tmp_path: Path
) -> None:
    _, srv = workers_server
    port = int(urlsplit(srv.url).port or 0)
    run = str(uuid.uuid4())
    consumers = [Consumer([srv.url], 0, run) for _ in range(8)]
    env = {"ZSTREAM_STATE_DIR": str(tmp_path / "state")}
    names = ("p0", "p1", "p2")
    steps = {
        n: [s for _ in range(40) for s in ({"publish": 20, "kind": n}, {"sleep": 0.05})]
        + [{"flush": 30}]
        for n in names
    }
    want = dict.fromkeys(names, 800)
    started = time.monotonic()
    procs = [start_client(srv.url, run, steps[n], token=TEST_TOKEN, env=env) for n in names]
    wait_for(lambda: all(len(c.events) >= 100 for c in consumers), "subscribers to see events")
    workers = workers_of(srv)
    held = {w.pid: connections_on(w, port) for w in workers}
    victim = max(workers, key=lambda w: held[w.pid])
    victim.kill()  # SIGKILL, mid-stream
    victim.wait(10)
    still_publishing = [p for p in procs if p.poll() is None]
    for proc in procs:
        report = finish(proc, started)
        assert report.report["flushes"][-1]["ok"], report.stderr[-2000:]
    assert still_publishing, "every publisher had finished before the kill: not mid-stream"
    assert held[victim.pid] >= 1, held
    wait_for(
        lambda: (
            len(workers_of(srv)) == WORKERS and victim.pid not in {w.pid for w in workers_of(srv)}
        ),
        "the supervisor to replace the killed worker",
    )
    srv.end_run(run)
    for c in consumers:
        c.thread.join(60)
        assert c.error is None, repr(c.error)
        assert c.ended, "a subscriber never saw end"
        assert_complete(c, want)


def test_workers_need_the_redis_broker() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "zstream_mp", "serve", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        timeout=30,
    )
    assert r.returncode == 2
    assert "--workers needs the Redis broker" in r.stderr
    assert r.stdout == ""


def test_sigterm_ends_every_workers_subscribers_the_graceful_way(
    workers_server: tuple[RunningRedis, RunningServer],
) -> None:
    """SIGTERM to the supervisor: each worker sends its subscribers `gap: shutdown`, `end`."""
    import threading

    import zstream_mp

    _, srv = workers_server
    run = str(uuid.uuid4())
    seen: list[list[object]] = [[] for _ in range(6)]

    def read(out: list[object]) -> None:
        try:
            for item in zstream_mp.subscribe(
                srv.url, run, token=TEST_TOKEN, reconnect=False, timeout=30
            ):
                out.append(item)
            out.append("end")
        except Exception as exc:
            out.append(exc)

    threads = [threading.Thread(target=read, args=(out,), daemon=True) for out in seen]
    for t in threads:
        t.start()
    wait_for(
        lambda: (
            sum(connections_on(w, int(urlsplit(srv.url).port or 0)) for w in workers_of(srv)) >= 6
        ),
        "the subscribers to connect",
    )
    started = time.monotonic()
    srv.proc.terminate()
    assert srv.proc.wait(30) == 0
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 15
    for out in seen:
        assert out == [zstream_mp.Gap("shutdown"), "end"], out
