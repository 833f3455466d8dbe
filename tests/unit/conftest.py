"""Fixtures shared by the unit tests: a mock server behind `httpx.MockTransport`, and
publishers that died and left a registry entry and a spool in the test's state dir."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from helpers.mock_server import SERVER, StoringServer, event_bytes

from zstream_mp._queue import EventQueue
from zstream_mp._recovery import adopt as _adopt
from zstream_mp._recovery import landed as _landed
from zstream_mp._recovery import registry as _registry
from zstream_mp._recovery.spill import Spill
from zstream_mp._stats import F_EXITED, Counters
from zstream_mp._stream_context import Destination
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


@dataclass(frozen=True)
class DeadPublisher:
    pid: int
    name: str
    """Its registry entry's name, `p<pid>-<iid>` (its spool directory's too)."""


LeaveDead = Callable[..., DeadPublisher]


@pytest.fixture
def leave_dead() -> LeaveDead:
    """Fork a child that publishes `n` events to `run_id`, spills them (unless
    `spool=False`), and ends without its exit hooks (`os._exit`), as a SIGKILL would leave
    it; `exited=True` marks its exit hook as finished. Returns its pid and entry name."""

    def leave(
        n: int,
        run_id: str | None = None,
        *,
        token: str | None = "tok-1",
        spool: bool = True,
        exited: bool = False,
        server: str = SERVER,
    ) -> DeadPublisher:
        run = run_id or str(uuid.uuid4())
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(read_fd)
                entry = _registry.register(False)
                assert entry is not None
                counters = Counters(entry.page)
                queue = EventQueue(1000, counters)
                dest = Destination(run_id=run, server=server, token=token, prefix=b"")
                entry.note_run(run, None)
                for seq in range(n):
                    queue.append(dest, event_bytes(seq, run))
                if spool and n:
                    Spill(entry.name, 1 << 20).spill_unsettled(queue, "test", final=True)
                if exited:
                    counters.flags = counters.flags | F_EXITED
                os.write(write_fd, entry.name.encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as fh:
            name = fh.read().decode()
        _, status = os.waitpid(pid, 0)
        assert status == 0 and name, "the dead publisher's child failed"
        return DeadPublisher(pid, name)

    return leave
