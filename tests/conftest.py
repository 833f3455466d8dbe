"""Shared fixtures: real server processes on loopback (see tests/helpers/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.redis import RunningRedis, redis_binary, start_redis
from helpers.servers import TEST_TOKEN, RunningServer, start_server


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """An open (no auth) memory-broker server shared by the session; use fresh run ids."""
    with start_server(heartbeat=1) as srv:
        yield srv


@pytest.fixture(scope="session")
def auth_server() -> Iterator[RunningServer]:
    """A memory-broker server requiring `TEST_TOKEN` (read,write)."""
    with start_server(token=TEST_TOKEN, heartbeat=1) as srv:
        yield srv


@pytest.fixture(scope="session")
def redis() -> Iterator[RunningRedis]:
    """A private redis-server; tests using it skip loudly when the binary is missing."""
    if redis_binary() is None:
        pytest.skip("redis-server binary not installed: Redis broker tests NOT run")
    with start_redis() as r:
        yield r


@pytest.fixture(scope="session")
def redis_server(redis: RunningRedis) -> Iterator[RunningServer]:
    """An open server on the Redis Streams broker."""
    with start_server(broker=redis.url, heartbeat=1) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _private_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test (and the processes it starts) gets its own state dir: a spool one test
    leaves must not be adopted by another test's publishers, towards a port since reused."""
    path = tmp_path_factory.mktemp("state")
    path.chmod(0o700)
    monkeypatch.setenv("ZSTREAM_STATE_DIR", str(path))
