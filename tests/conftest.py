"""Shared fixtures: real server processes on loopback (see tests/helpers/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.redis import RunningRedis, redis_binary, start_redis
from helpers.servers import TEST_TOKEN, RunningServer, start_server

TESTS = Path(__file__).resolve().parent

FAST_SCENARIOS: frozenset[str] = frozenset(
    {
        "contract/test_contract_status.py",
        "test_asyncio.py",
        "test_bad_input.py",
        "test_cli.py",
        "test_cli_onramp.py",
        "test_cli_polish.py",
        "test_consumer_lines.py",
        "test_consumer_reconnect.py",
        "test_idle_exit.py",
        "test_integrations_api.py",
        "test_log_handler.py",
        "test_publisher_hardening.py",
        "test_runs_api.py",
        "test_server_framing.py",
        "test_server_hardening.py",
        "test_server_http.py",
        "test_server_sse.py",
        "test_signals.py",
        "test_state_dir.py",
        "test_ui_http.py",
        "test_ui_stream.py",
    }
)
"""Scenario modules in the fast tier (`pytest -m fast`) beside `tests/unit/`: each takes
seconds, not minutes (measured with `--durations`), so the tier stays under 3 minutes on
2 cores (the tiers table in CONTRIBUTING.md). A new quick scenario module joins here."""

SLOW_IN_FAST: frozenset[str] = frozenset(
    {
        "test_cli_onramp.py::test_demo_keep_keeps_the_page_alive_until_interrupted",
        "test_cli_polish.py::test_serve_on_all_interfaces_without_a_token_warns",
        "test_cli_polish.py::test_tail_exits_4_when_the_server_goes_away_mid_stream[killed]",
        "test_server_sse.py::test_fan_out_every_event_once_in_order[20-3000]",
    }
)
"""Tests of those modules left to the full run (node ids relative to `tests/`)."""

NEVER_FAST = {"zenml", "forkmatrix", "recovery", "ray", "dask"}
"""Marks that need a peer, a framework or a storm: never in the fast tier."""


# Runs before `-m` selects (pytest calls conftest hooks before its own), and after the
# contract suite's conftest has marked its ZenML and Redis targets (deeper conftests first).
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the fast tier: every unit test, and the quick scenario modules' tests."""
    for item in items:
        rel = item.path.relative_to(TESTS).as_posix()
        in_tier = rel.startswith("unit/") or rel in FAST_SCENARIOS
        node = item.nodeid.split("tests/", 1)[-1]
        if in_tier and node not in SLOW_IN_FAST and not NEVER_FAST & _marks(item):
            item.add_marker(pytest.mark.fast)


def _marks(item: pytest.Item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


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
