"""Fixtures shared by the unit tests: a mock server behind `httpx.MockTransport`, and
publishers that died and left a registry entry and a spool in the test's state dir (the
suite's conftest gives every test its own `ZSTREAM_STATE_DIR`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from helpers.dead_publisher import LeaveDead
from helpers.dead_publisher import leave_dead as leave_dead_publisher
from helpers.mock_server import StoringServer

import zstream_mp
from zstream_mp import _process
from zstream_mp._recovery import adopt as _adopt
from zstream_mp._recovery import landed as _landed
from zstream_mp._recovery.statedir import state_dir
from zstream_mp._transport import Transport
from zstream_mp._wire import ENV_CONTEXT, ENV_DURABLE, ENV_IDLE_EXIT, ENV_SERVER, ENV_TOKEN


@pytest.fixture
def mock_server() -> StoringServer:
    """A fresh mock server that stores what it is sent."""
    return StoringServer()


@pytest.fixture
def route_deliverers(monkeypatch: pytest.MonkeyPatch) -> Callable[[StoringServer], None]:
    """Make the transports and stream readers that deliverers build for themselves
    (`adopt_all`, `drain`, `flush_tree`) go to a mock server."""

    def route(target: StoringServer) -> None:
        mock = httpx.MockTransport(target)
        real_history = _landed.History

        def transport(*args: object, **kwargs: object) -> Transport:
            kwargs.setdefault("http_transport", mock)
            return Transport(*args, **kwargs)  # type: ignore[arg-type]

        def history(http_transport: httpx.BaseTransport | None = None) -> _landed.History:
            return real_history(http_transport or mock)

        monkeypatch.setattr(_adopt, "Transport", transport)
        monkeypatch.setattr(_landed, "History", history)

    return route


@pytest.fixture
def leave_dead() -> LeaveDead:
    """`helpers.dead_publisher.leave_dead`: a dead publisher in this test's state dir."""
    return leave_dead_publisher


@pytest.fixture
def publisher(
    monkeypatch: pytest.MonkeyPatch,
    mock_server: StoringServer,
    route_deliverers: Callable[[StoringServer], None],
) -> Iterator[StoringServer]:
    """This process's publisher, made fresh for the test and sending to `mock_server`.

    The state the suite's process had (if any) is put back afterwards; nothing is bound;
    the background adoption scan is not due (its stamp is fresh), so no thread of this test
    outlives it on another test's state dir.
    """
    monkeypatch.setattr(_process, "current", None)
    for name in (ENV_CONTEXT, ENV_SERVER, ENV_TOKEN, ENV_DURABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV_IDLE_EXIT, "0.05")
    mock = httpx.MockTransport(mock_server)

    def transport(*args: object, **kwargs: object) -> Transport:
        kwargs.setdefault("http_transport", mock)
        return Transport(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_process, "Transport", transport)
    route_deliverers(mock_server)
    Path(state_dir(), "last-scan").touch()
    try:
        yield mock_server
    finally:
        zstream_mp.unbind()
        st = _process.existing_state()
        if st is not None:
            st.queue.wait_drained(time.monotonic() + 5)
