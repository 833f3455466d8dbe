"""asyncio: a run per task (`with bind()`), `aflush()`, `asubscribe()` across dropped
connections, and the one warning for a publish outside any run. Real servers on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import httpx
from helpers.servers import RunningServer
from test_consumer_reconnect import DroppingProxy

import zstream_mp
from zstream_mp.consumer import Event
from zstream_mp.runs import end_run


def _payloads(server: RunningServer, run: str) -> list[dict[str, object]]:
    end_run(server.url, run)
    return [e.payload for e in zstream_mp.subscribe(server.url, run) if isinstance(e, Event)]


def test_two_tasks_each_in_its_own_bind_publish_to_their_own_runs(server: RunningServer) -> None:
    runs = {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())}

    async def task(name: str) -> None:
        with zstream_mp.bind(runs[name], server=server.url):
            for i in range(50):
                zstream_mp.publish({"task": name, "seq": i})
                await asyncio.sleep(0)  # the other task runs between every two publishes

    async def main() -> bool:
        await asyncio.gather(task("a"), task("b"))
        return await zstream_mp.aflush(10)

    assert asyncio.run(main())
    for name, run in runs.items():
        got = _payloads(server, run)
        assert [p["task"] for p in got] == [name] * 50, (name, got[:5])
        assert [p["seq"] for p in got] == list(range(50))
    assert zstream_mp.current_context() is None  # both blocks restored what was before


AFLUSH_ON_A_HUNG_SERVER = """
import asyncio, socket, sys, time, uuid
import zstream_mp

hung = socket.socket()  # accepts, never answers
hung.bind(("127.0.0.1", 0))
hung.listen(8)
ticks = []


async def ticker():
    while True:
        ticks.append(time.monotonic())
        await asyncio.sleep(0.01)


async def main():
    zstream_mp.bind(str(uuid.uuid4()), server=f"http://127.0.0.1:{hung.getsockname()[1]}")
    zstream_mp.publish({"seq": 0})
    beat = asyncio.create_task(ticker())
    started = time.monotonic()
    ok = await zstream_mp.aflush(0.3)
    beat.cancel()
    return ok, time.monotonic() - started


ok, took = asyncio.run(main())
print(ok, round(took, 3), len(ticks))
"""


def test_aflush_keeps_the_loop_running_and_says_false_past_its_timeout() -> None:
    """In a process of its own: what it cannot deliver stays in that process's spool."""
    done = subprocess.run(
        [sys.executable, "-c", AFLUSH_ON_A_HUNG_SERVER], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    ok, took, ticks = done.stdout.split()
    assert ok == "False"
    assert float(took) < 2.0
    assert int(ticks) >= 10, "aflush() blocked the event loop"


def test_asubscribe_resumes_across_dropped_connections(server: RunningServer) -> None:
    run = str(uuid.uuid4())
    n = 300
    url = f"{server.url}/api/v1/runs/{run}/events"
    events = [{"pipeline_run_id": run, "kind": "k", "payload": {"seq": i}} for i in range(n)]
    for start in range(0, n, 100):
        assert httpx.post(url, json={"events": events[start : start + 100]}).status_code == 200
    assert httpx.post(f"{server.url}/api/v1/zstream/runs/{run}/end").status_code == 200
    proxy = DroppingProxy(int(server.url.rsplit(":", 1)[1]), budget=5_000)

    async def main() -> list[int]:
        seqs = []
        async for event in zstream_mp.asubscribe(f"http://127.0.0.1:{proxy.port}", run):
            if isinstance(event, Event):
                seqs.append(int(event.payload["seq"]))
        return seqs

    try:
        seqs = asyncio.run(main())
    finally:
        proxy.close()
    assert proxy.connections > 3
    assert seqs == list(range(n))


def test_asubscribe_raises_the_servers_refusal_where_it_is_awaited(
    auth_server: RunningServer,
) -> None:
    async def main() -> None:
        async for _ in zstream_mp.asubscribe(auth_server.url, str(uuid.uuid4()), token="nope"):
            pass

    try:
        asyncio.run(main())
    except zstream_mp.AuthenticationError:
        return
    raise AssertionError("a 401 did not raise AuthenticationError")


def test_publish_outside_any_run_warns_once_per_process_with_the_fix() -> None:
    code = (
        "import zstream_mp\n"
        "for i in range(5): zstream_mp.publish({'seq': i})\n"
        "print(zstream_mp.stats().dropped['no_context'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    lines = [ln for ln in done.stderr.splitlines() if "outside any run" in ln]
    assert len(lines) == 1, done.stderr
    assert "zstream_mp.bind(" in lines[0]
