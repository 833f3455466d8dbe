"""`_recovery/adopt`: a dead process's spool is delivered once, in order, by one deliverer
at a time, with the credentials the spool names; what stops a delivery leaves the spool for
later and says why. Dead publishers are forked children ended by `os._exit`."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from helpers.dead_publisher import LeaveDead
from helpers.mock_server import SERVER, StoringServer

from zstream_mp._recovery import adopt, registry, spool
from zstream_mp._recovery.adopt import adopt_all, adoptable, last_attempt
from zstream_mp._recovery.liveness import own_identity, start_of
from zstream_mp._sender import THREAD_PREFIX
from zstream_mp._stats import ProcessRow

RUN = str(uuid.uuid4())
Route = Callable[[StoringServer], None]


def _deadline(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def _spool_of(name: str) -> spool.SpoolDir:
    (found,) = [s for s in spool.list_spools() if s.entry_name == name]
    return found


def _row(name: str) -> ProcessRow:
    (found,) = [f for f in registry.scan() if f.name == name]
    return found.row()


def test_a_dead_processs_spool_is_delivered_once_in_order_then_removed(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    dead = leave_dead(30, RUN)
    results: list[adopt.Adopted] = []
    assert adopt_all(_deadline(), on_result=results.append)
    assert mock_server.seqs() == list(range(30))
    assert all(r.headers["authorization"] == "Bearer tok-1" for r in mock_server.posts)
    assert [(r.sent, r.dropped, r.complete) for r in results] == [(30, 0, True)]
    assert spool.list_spools() == []
    row = _row(dead.name)
    assert row.state == "dead" and row.stats.spool_sent == 30 and row.spool_pending == 0
    assert adopt_all(_deadline())  # nothing left: nothing sent again
    assert len(mock_server.stored) == 30


def test_every_batch_carries_a_stable_idempotency_key(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    dead = leave_dead(3, RUN)
    adopt_all(_deadline())
    (post,) = mock_server.posts
    iid = dead.name.partition("-")[2]
    assert post.headers["idempotency-key"] == spool.batch_key(iid, 0, 2)


def test_a_live_owners_spool_is_not_adoptable() -> None:
    me = own_identity()
    path = os.path.join(spool.spool_root(), f"p{me[0]}-abcd")
    spool.ensure_dir(path)
    assert not adoptable(spool.list_spools()[0])


def test_a_spool_claimed_by_a_live_process_is_left_to_it(leave_dead: LeaveDead) -> None:
    dead = leave_dead(2, RUN)
    found = _spool_of(dead.name)
    parent = (os.getppid(), start_of(os.getppid()) or 0)
    claimed = os.path.join(
        os.path.dirname(found.path), f"{dead.name}.claim-{parent[0]}-{parent[1]}"
    )
    os.rename(found.path, claimed)
    assert not adoptable(_spool_of(dead.name))


def test_a_claim_whose_claimer_died_is_taken_over(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    dead = leave_dead(4, RUN)
    claimer = leave_dead(0)  # another dead process: its claim proves nothing
    found = _spool_of(dead.name)
    os.rename(found.path, f"{found.path}.claim-{claimer.pid}-1")
    assert adoptable(_spool_of(dead.name))
    assert adopt_all(_deadline())
    assert mock_server.seqs() == [0, 1, 2, 3]


def test_a_401_leaves_the_spool_for_later_and_says_why(
    leave_dead: LeaveDead, route_deliverers: Route
) -> None:
    refusing = StoringServer(status=401)
    route_deliverers(refusing)
    dead = leave_dead(5, RUN)
    results: list[adopt.Adopted] = []
    assert not adopt_all(_deadline(), on_result=results.append)
    assert [(r.sent, r.complete, r.refused) for r in results] == [(0, False, 401)]
    found = _spool_of(dead.name)
    assert found.claimer is None  # the claim was given back
    assert spool.count_pending(found.path) == 5
    assert "401" in (last_attempt(found.path) or "")
    assert _row(dead.name).spool_pending == 5


def test_a_refused_batch_is_dropped_counted_and_the_spool_settled(
    leave_dead: LeaveDead, route_deliverers: Route, caplog: pytest.LogCaptureFixture
) -> None:
    route_deliverers(StoringServer(status=422))
    dead = leave_dead(5, RUN)
    results: list[adopt.Adopted] = []
    assert adopt_all(_deadline(), on_result=results.append)
    assert [(r.sent, r.dropped) for r in results] == [(0, 5)]
    assert spool.list_spools() == []
    assert _row(dead.name).spool_pending == 0
    assert any("Dropped 5 spooled events" in r.getMessage() for r in caplog.records)


def test_a_given_token_replaces_the_spools_own(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    leave_dead(2, RUN)
    assert adopt_all(_deadline(), token="drain-token")
    assert {r.headers["authorization"] for r in mock_server.posts} == {"Bearer drain-token"}


def test_a_spool_without_a_token_gets_the_deliverers_own_for_that_server(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    leave_dead(2, RUN, token=None)
    asked: list[str] = []

    def token_for(server: str) -> str | None:
        asked.append(server)
        return "mine"

    assert adopt_all(_deadline(), token_for=token_for)
    assert asked == [SERVER]
    assert {r.headers["authorization"] for r in mock_server.posts} == {"Bearer mine"}


def test_no_time_left_leaves_the_spool_unclaimed(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    dead = leave_dead(3, RUN)
    assert not adopt_all(time.monotonic() - 1)
    assert mock_server.posts == []
    assert _spool_of(dead.name).claimer is None


def test_only_the_spools_asked_for_are_adopted(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    wanted = leave_dead(2, RUN)
    other = leave_dead(3, str(uuid.uuid4()))
    assert adopt_all(_deadline(), only=lambda s: s.entry_name == wanted.name)
    assert mock_server.seqs() == [0, 1]
    assert [s.entry_name for s in spool.list_spools()] == [other.name]


def test_adopt_with_a_given_transport_delivers_one_spool(leave_dead: LeaveDead) -> None:
    """`spool drain` and the tree flush hand their own transport to `adopt()`."""
    dead = leave_dead(6, RUN)
    target = StoringServer()
    result = adopt.adopt(_spool_of(dead.name), _deadline(), target.transport())
    assert (result.sent, result.complete) == (6, True)
    assert target.seqs() == list(range(6))


def test_a_lost_claim_race_delivers_nothing(leave_dead: LeaveDead) -> None:
    dead = leave_dead(2, RUN)
    stale = _spool_of(dead.name)
    assert spool.claim(stale) is not None  # someone else won the rename
    target = StoringServer()
    result = adopt.adopt(stale, _deadline(), target.transport())
    assert result.complete is False and target.posts == []


def test_a_spool_without_destinations_drops_its_events_rather_than_guess(
    leave_dead: LeaveDead,
) -> None:
    dead = leave_dead(3, RUN)
    found = _spool_of(dead.name)
    os.unlink(os.path.join(found.path, "dests.json"))
    target = StoringServer()
    result = adopt.adopt(found, _deadline(), target.transport())
    assert (result.sent, result.dropped, result.complete) == (0, 3, True)
    assert target.posts == []


def test_last_attempt_of_a_fresh_spool_is_none(tmp_path: os.PathLike[str]) -> None:
    assert last_attempt(str(tmp_path)) is None


def test_a_later_publisher_adopts_in_the_background_at_most_once_per_scan_interval(
    leave_dead: LeaveDead,
    mock_server: StoringServer,
    route_deliverers: Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route_deliverers(mock_server)
    monkeypatch.setattr(adopt, "_scan_started", None)
    leave_dead(4, RUN)
    results: list[adopt.Adopted] = []
    adopt.maintain_soon(lambda s: None, results.append)
    for thread in threading.enumerate():
        if thread.name == f"{THREAD_PREFIX}adopt":
            thread.join(30)
    assert mock_server.seqs() == [0, 1, 2, 3] and results[0].sent == 4
    monkeypatch.setattr(adopt, "_scan_started", None)  # another process, moments later
    leave_dead(2, RUN)
    adopt.maintain_soon(lambda s: None, results.append)
    assert not any(t.name == f"{THREAD_PREFIX}adopt" for t in threading.enumerate())
    assert len(spool.list_spools()) == 1  # left for the next scan
