"""Fixtures shared by the unit tests: a mock server behind `httpx.MockTransport`, and
publishers that died and left a registry entry and a spool in the test's state dir (the
suite's conftest gives every test its own `ZSTREAM_STATE_DIR`)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from helpers.dead_publisher import LeaveDead
from helpers.dead_publisher import leave_dead as leave_dead_publisher
from helpers.mock_server import StoringServer

from zstream_mp._recovery import adopt as _adopt
from zstream_mp._recovery import landed as _landed
from zstream_mp._transport import Transport


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
