"""`_recovery`'s façade as `zstream-mp spool` uses it: `spools()` says why each spool is
still there, `drain()` delivers the ones whose owner is gone, `discard()` removes one."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest
from helpers.dead_publisher import LeaveDead
from helpers.mock_server import SERVER, StoringServer, event_bytes

from zstream_mp import _recovery
from zstream_mp._queue import EventQueue
from zstream_mp._recovery import spool
from zstream_mp._recovery.spill import Spill
from zstream_mp._recovery.statedir import state_dir
from zstream_mp._stream_context import Destination
from zstream_mp._wire import ENV_SERVER, ENV_TOKEN

RUN = str(uuid.uuid4())
OTHER_SERVER = "http://127.0.0.1:10"
Route = Callable[[StoringServer], None]


def _deadline(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def _own_spool(n: int) -> Spill:
    """A spool this (living) process owns."""
    queue = EventQueue(100)
    dest = Destination(run_id=RUN, server=SERVER, token=None, prefix=b"")
    for seq in range(n):
        queue.append(dest, event_bytes(seq, RUN))
    s = Spill(None, 1 << 20)
    s.spill_unsettled(queue, "test")
    return s


def test_spools_say_who_delivers_each_one(leave_dead: LeaveDead) -> None:
    dead = leave_dead(3, RUN)
    _own_spool(2)
    rows = {row.owner: row for row in _recovery.spools()}
    gone, mine = rows[dead.pid], rows[os.getpid()]
    assert gone.adoptable and gone.unsettled == 3 and "waiting for a deliverer" in gone.reason
    assert gone.destinations == [{"server": SERVER, "run_id": RUN}]
    assert not mine.adoptable and "alive and delivers it itself" in mine.reason
    assert set(gone.as_dict()) == {
        "path", "owner", "unsettled", "adoptable", "reason", "destinations",
    }  # fmt: skip


def test_a_settled_spool_is_not_listed(leave_dead: LeaveDead) -> None:
    leave_dead(2, RUN)
    (found,) = spool.list_spools()
    page = spool.StatePage(os.path.join(found.path, "state"), create=False)
    page.resolve(2)
    page.close()
    assert [r.owner for r in _recovery.spools()] == []


def test_drain_delivers_with_the_given_token_and_reports(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    leave_dead(4, RUN)
    report = _recovery.drain(_deadline(), token="drain-token")
    assert (report.sent, report.dropped, report.complete, report.refused) == (4, 0, True, None)
    assert {r.headers["authorization"] for r in mock_server.posts} == {"Bearer drain-token"}
    assert _recovery.spools() == []


def test_drain_for_one_server_leaves_the_others(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    leave_dead(2, RUN)
    other = leave_dead(3, RUN, server=OTHER_SERVER)
    report = _recovery.drain(_deadline(), server=SERVER + "/")
    assert report.sent == 2
    assert [r.owner for r in _recovery.spools()] == [other.pid]


def test_drain_says_when_credentials_stopped_it(
    leave_dead: LeaveDead, route_deliverers: Route
) -> None:
    route_deliverers(StoringServer(status=403))
    leave_dead(2, RUN)
    report = _recovery.drain(_deadline())
    assert not report.complete and report.refused == 403 and report.sent == 0
    (row,) = _recovery.spools()
    assert "403" in row.reason


def test_drain_uses_the_environment_token_only_for_the_environment_server(
    leave_dead: LeaveDead,
    mock_server: StoringServer,
    route_deliverers: Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route_deliverers(mock_server)
    monkeypatch.setenv(ENV_SERVER, SERVER)
    monkeypatch.setenv(ENV_TOKEN, "env-token")
    leave_dead(1, RUN, token=None)
    leave_dead(1, RUN, token=None, server=OTHER_SERVER)
    _recovery.drain(_deadline())
    by_host = {r.url.port: r.headers.get("authorization") for r in mock_server.posts}
    assert by_host == {9: "Bearer env-token", 10: None}


def test_discard_removes_a_dead_owners_spool_only(leave_dead: LeaveDead) -> None:
    leave_dead(2, RUN)
    _own_spool(1)
    rows = {row.owner: row for row in _recovery.spools()}
    mine = rows.pop(os.getpid())
    (gone,) = rows.values()
    assert _recovery.discard(gone)
    assert not _recovery.discard(gone)  # already gone
    assert not _recovery.discard(mine)  # its owner lives
    assert [r.owner for r in _recovery.spools()] == [os.getpid()]


def test_process_rows_and_sweep(leave_dead: LeaveDead) -> None:
    leave_dead(0, RUN)
    assert len(_recovery.process_rows()) == 1
    assert _recovery.sweep() is not None
    assert _recovery.process_rows() == []
    assert os.path.isdir(state_dir())
