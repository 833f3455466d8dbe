"""Scale-out: three `zstream-mp serve` replicas on one real redis-server act as one server.

Real processes only: a private redis-server, three server processes on their own loopback
ports, publisher processes (tests/programs/faults/fault_client.py, `zstream_mp.publish`) bound to
different replicas, and `zstream_mp.subscribe()` consumers on each replica. Every event is
tagged (publisher, seq): kind names the publisher, the payload carries the seq.

* every subscriber sees every event of its run exactly once, in per-publisher order;
* SIGKILL of a replica mid-stream: its subscribers resume on another replica from their
  last id (the broker ids are the Redis stream's, the same on every replica) and miss
  nothing. The failover is the client's (a load balancer does the same for one URL):
  `subscribe()` takes one server, so the subscriber here resubscribes with `since=`;
* a batch retried on another replica after a lost answer is stored once: the idempotency
  record lives in Redis (directly, and through a proxy that loses replica A's answer and
  sends the publisher's retry to replica B).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.redis import RunningRedis, redis_binary, start_redis
from helpers.servers import TEST_TOKEN, RunningServer, start_server
from helpers.switchproxy import SwitchProxy
from test_faults import finish, start_client

import zstream_mp
from zstream_mp._wire import AUTHORIZATION, IDEMPOTENCY_KEY, bearer, run_url
from zstream_mp.errors import ServerUnavailableError

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        redis_binary() is None, reason="redis-server binary not installed: replica tests NOT run"
    ),
]

AUTH = {AUTHORIZATION: bearer(TEST_TOKEN)}


@pytest.fixture
def cluster() -> Iterator[tuple[RunningRedis, list[RunningServer]]]:
    """A private redis-server and three replicas on it (same token, same deployment id)."""
    with ExitStack() as stack:
        redis = stack.enter_context(start_redis())
        replicas = [
            stack.enter_context(start_server(broker=redis.url, token=TEST_TOKEN, heartbeat=1))
            for _ in range(3)
        ]
        yield redis, replicas


@dataclass
class Consumer:
    """A subscriber that fails over to the next replica when its own is gone."""

    urls: list[str]
    first: int
    run: str
    events: list[tuple[str, int]] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    replicas_used: list[int] = field(default_factory=list)
    error: BaseException | None = None
    ended: bool = False

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        index, since = self.first, None
        try:
            for _ in range(2 * len(self.urls)):
                self.replicas_used.append(index)
                try:
                    for item in zstream_mp.subscribe(
                        self.urls[index],
                        self.run,
                        token=TEST_TOKEN,
                        since=since,
                        retry_for=1.0,
                        timeout=10,
                    ):
                        if isinstance(item, zstream_mp.Gap):
                            self.gaps.append(item.reason)
                            continue
                        self.events.append((item.kind, int(item.payload["seq"])))
                        since = item.id
                    self.ended = True
                    return
                except ServerUnavailableError:
                    index = (index + 1) % len(self.urls)  # this replica is gone: next one
        except BaseException as exc:
            self.error = exc


def subscribers_on(srv: RunningServer, run: str) -> int:
    """Subscribers the replica counts on the run; 0 while it knows nothing of it (404)."""
    r = httpx.get(run_url(srv.url, run), headers=AUTH, timeout=5)
    if r.status_code == 404:  # no subscriber has connected yet and nothing was posted
        return 0
    r.raise_for_status()
    return int(r.json()["subscribers"])


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_complete(consumer: Consumer, want: dict[str, int]) -> None:
    """Exactly the expected (publisher, seq) set, once each, each publisher's seqs in order."""
    counts = Counter(consumer.events)
    dups = [k for k, n in counts.items() if n > 1]
    expected = {(p, s) for p, n in want.items() for s in range(n)}
    missing = expected - set(counts)
    extra = set(counts) - expected
    assert not (dups or missing or extra), (
        f"subscriber from replica {consumer.first}: {len(missing)} missing "
        f"{sorted(missing)[:5]}, {len(dups)} duplicated {dups[:5]}, unexpected {sorted(extra)[:5]}"
    )
    for publisher, n in want.items():
        seqs = [s for p, s in consumer.events if p == publisher]
        assert seqs == list(range(n)), f"{publisher} out of order on replica {consumer.first}"
    assert consumer.gaps == []


def test_replicas_deliver_everything_once_and_survive_a_sigkill(
    cluster: tuple[RunningRedis, list[RunningServer]], tmp_path: Path
) -> None:
    _, replicas = cluster
    urls = [r.url for r in replicas]
    run = str(uuid.uuid4())
    consumers = [Consumer(urls, i % 3, run) for i in range(6)]
    for i, srv in enumerate(replicas):
        wait_for(lambda srv=srv: subscribers_on(srv, run) == 2, f"subscribers on replica {i}")

    env = {"ZSTREAM_STATE_DIR": str(tmp_path / "state")}
    # p2 posts to replica 2 in one burst and exits; p0 and p1 post to replicas 0 and 1
    # in rounds across the kill of replica 2.
    burst = [{"publish": 500, "kind": "p2"}, {"flush": 30}]
    slow = {
        name: [s for _ in range(40) for s in ({"publish": 20, "kind": name}, {"sleep": 0.05})]
        + [{"flush": 30}]
        for name in ("p0", "p1")
    }
    want = {"p0": 800, "p1": 800, "p2": 500}
    started = time.monotonic()
    p2 = start_client(urls[2], run, burst, token=TEST_TOKEN, env=env)
    assert finish(p2, started).report["flushes"][0]["ok"]
    slow_procs = {
        name: start_client(urls[i], run, steps, token=TEST_TOKEN, env=env)
        for i, (name, steps) in enumerate(slow.items())
    }
    on_victim = [c for c in consumers if c.first == 2]
    wait_for(
        lambda: all(sum(1 for p, _ in c.events if p != "p2") >= 100 for c in on_victim),
        "replica 2's subscribers to see the slow publishers",
    )
    replicas[2].proc.kill()  # SIGKILL, mid-stream
    replicas[2].proc.wait(10)
    still_publishing = [n for n, p in slow_procs.items() if p.poll() is None]
    for proc in slow_procs.values():
        run_report = finish(proc, started)
        assert run_report.report["flushes"][-1]["ok"], run_report.stderr[-2000:]
    assert still_publishing, "both publishers had finished before the kill: not mid-stream"
    replicas[0].end_run(run)
    for c in consumers:
        c.thread.join(60)
        assert c.error is None, repr(c.error)
        assert c.ended, f"subscriber from replica {c.first} never saw end"
        assert_complete(c, want)
    for c in on_victim:
        assert c.replicas_used[0] == 2 and len(c.replicas_used) > 1, c.replicas_used
    for c in consumers:
        if c.first != 2:
            assert c.replicas_used == [c.first]


def _batch(run: str, tag: str, n: int) -> bytes:
    events = [{"pipeline_run_id": run, "kind": tag, "payload": {"seq": i}} for i in range(n)]
    return json.dumps({"events": events}).encode()


def _stream_of(url: str, run: str) -> list[tuple[str, int]]:
    """Every event of the run, read once from a replica (the run is ended first)."""
    return [
        (e.kind, int(e.payload["seq"]))
        for e in zstream_mp.subscribe(url, run, token=TEST_TOKEN, timeout=10)
        if isinstance(e, zstream_mp.Event)
    ]


def test_a_key_retried_on_another_replica_is_answered_from_redis(
    cluster: tuple[RunningRedis, list[RunningServer]],
) -> None:
    _, (a, b, c) = cluster
    run = str(uuid.uuid4())
    path = f"/api/v1/runs/{run}/events"
    body = _batch(run, "direct", 10)
    headers = {**AUTH, IDEMPOTENCY_KEY: "batch-1", "Content-Type": "application/json"}
    first = httpx.post(a.url + path, content=body, headers=headers, timeout=10)
    assert first.status_code == 200
    again = httpx.post(b.url + path, content=body, headers=headers, timeout=10)
    assert again.status_code == 200 and again.json() == first.json()
    other = httpx.post(c.url + path, content=_batch(run, "other", 3), headers=headers)
    assert other.status_code == 422  # same key, different batch: refused on any replica
    c.end_run(run)
    got = _stream_of(c.url, run)
    assert got == [("direct", i) for i in range(10)]


def test_a_lost_answer_is_retried_on_another_replica_without_duplicates(
    cluster: tuple[RunningRedis, list[RunningServer]], tmp_path: Path
) -> None:
    _, (a, b, c) = cluster
    run = str(uuid.uuid4())
    env = {"ZSTREAM_STATE_DIR": str(tmp_path / "state")}
    with SwitchProxy(a.url, b.url) as proxy:
        steps = [{"publish": 300, "kind": "via-proxy"}, {"flush": 30}]
        pub = finish(start_client(proxy.url, run, steps, token=TEST_TOKEN, env=env), 0.0)
    assert pub.report["flushes"][0]["ok"], pub.stderr[-2000:]
    assert pub.final("retries") >= 1
    posts = [f for f in proxy.log if "/events" in f.path]
    lost, retry = posts[0], posts[1]
    assert (lost.upstream, lost.status, lost.relayed) == (a.url, 200, False)
    assert (retry.upstream, retry.key, retry.relayed) == (b.url, lost.key, True)
    assert json.loads(retry.body) == json.loads(lost.body)  # B answered A's stored answer
    assert {f.upstream for f in posts[1:]} == {b.url}
    c.end_run(run)
    got = _stream_of(c.url, run)
    assert got == [("via-proxy", i) for i in range(300)]


def test_a_dead_replicas_claim_is_taken_over_after_its_lease(
    cluster: tuple[RunningRedis, list[RunningServer]],
) -> None:
    """A claim left in Redis by a replica killed before it published blocks the key only
    for its lease: the retry on another replica then publishes the batch, once."""
    import redis as redis_py

    from zstream_mp.server.idempotency import PENDING_LEASE, RedisIdempotency, caller_scope

    redis, (a, b, _) = cluster
    run = str(uuid.uuid4())
    path = f"/api/v1/runs/{run}/events"
    body = _batch(run, "lease", 5)
    client = redis_py.Redis.from_url(redis.url)
    before = set(client.keys("zstream:idem:*"))
    headers = {**AUTH, "Content-Type": "application/json"}
    first = httpx.post(a.url + path, content=body, headers={**headers, IDEMPOTENCY_KEY: "k1"})
    assert first.status_code == 200
    (k1,) = set(client.keys("zstream:idem:*")) - before
    fp = json.loads(client.get(k1))["fp"]
    # "k2" claimed by a replica that died before it published (the same batch).
    k2 = RedisIdempotency(None, "zstream-mp")._key(caller_scope(TEST_TOKEN, run), "k2")
    client.set(k2, json.dumps({"fp": fp, "result": None, "claim": "dead"}), px=3000)
    t0 = time.monotonic()
    retry = httpx.post(
        b.url + path, content=body, headers={**headers, IDEMPOTENCY_KEY: "k2"}, timeout=40
    )
    waited = time.monotonic() - t0
    assert retry.status_code == 200, retry.text
    assert waited < PENDING_LEASE + 2
    b.end_run(run)
    got = _stream_of(b.url, run)
    assert Counter(got) == {("lease", i): 2 for i in range(5)}  # once under k1, once under k2


def test_health_and_ready_on_every_replica_follow_redis(
    cluster: tuple[RunningRedis, list[RunningServer]],
) -> None:
    """`/health` is the process, `/ready` is the process and Redis, on every replica."""
    from zstream_mp._wire import HEALTH_PATH, READY_PATH, RETRY_AFTER

    redis, replicas = cluster
    assert [httpx.get(r.url + READY_PATH).status_code for r in replicas] == [200] * 3
    redis.kill()
    for r in replicas:
        ready = httpx.get(r.url + READY_PATH, timeout=10)
        assert ready.status_code == 503 and ready.headers.get(RETRY_AFTER)
        assert httpx.get(r.url + HEALTH_PATH).status_code == 200
    with start_redis(port=redis.port):
        wait_for(
            lambda: all(httpx.get(r.url + READY_PATH).status_code == 200 for r in replicas),
            "every replica to be ready again",
        )
