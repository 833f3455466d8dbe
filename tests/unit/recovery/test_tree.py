"""`_recovery/tree`: a tree flush waits for this process's descendants and adopts what the
dead ones left; tree and run stats add up their rows. Descendants are forked children."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest
from helpers.dead_publisher import LeaveDead
from helpers.mock_server import StoringServer

from zstream_mp import _recovery
from zstream_mp._recovery import registry, spool
from zstream_mp._recovery.adopt import Adopted
from zstream_mp._stats import Counters

RUN = str(uuid.uuid4())
Route = Callable[[StoringServer], None]


def _deadline(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def _no_token(server: str) -> str | None:
    return None


class Own:
    """The calling process's publisher as a tree flush sees it."""

    def __init__(self, drained: bool = True) -> None:
        self.drained = drained
        self.adopted: list[Adopted] = []

    def flush_until(self, deadline: float) -> bool:
        return self.drained

    def _count_adopted(self, result: Adopted) -> None:
        self.adopted.append(result)


def test_a_tree_flush_adopts_what_dead_descendants_left(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    leave_dead(5, RUN)
    leave_dead(3, RUN)
    own = Own()
    assert _recovery.flush_tree(_deadline(), None, own=own, token_for=_no_token)
    assert sorted(mock_server.seqs()) == [0, 0, 1, 1, 2, 2, 3, 4]
    assert sum(r.sent for r in own.adopted) == 8
    assert spool.list_spools() == []


def test_a_tree_flush_with_nothing_in_scope_is_done_at_once() -> None:
    assert _recovery.flush_tree(_deadline(), None, own=None, token_for=_no_token)


def test_a_descendant_killed_with_events_and_no_spool_makes_the_flush_false(
    leave_dead: LeaveDead,
) -> None:
    leave_dead(4, RUN, spool=False)
    assert not _recovery.flush_tree(_deadline(), None, own=None, token_for=_no_token)


def test_the_own_publishers_failure_makes_the_flush_false() -> None:
    assert not _recovery.flush_tree(_deadline(), None, own=Own(False), token_for=_no_token)


def test_a_spool_that_cannot_be_delivered_yet_ends_the_flush_at_its_deadline(
    leave_dead: LeaveDead, route_deliverers: Route
) -> None:
    route_deliverers(StoringServer(status=401))
    leave_dead(2, RUN)
    assert not _recovery.flush_tree(_deadline(0.2), None, own=None, token_for=_no_token)
    assert len(spool.list_spools()) == 1  # kept for a later attempt


def test_a_run_flush_adopts_only_that_runs_spools(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    leave_dead(2, RUN)
    other = leave_dead(3, str(uuid.uuid4()))
    assert _recovery.flush_tree(_deadline(), RUN, own=None, token_for=_no_token)
    assert mock_server.seqs() == [0, 1]
    assert [s.entry_name for s in spool.list_spools()] == [other.name]


def test_adopt_descendants_leaves_other_runs_and_reports_completion(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    leave_dead(2, RUN)
    results: list[Adopted] = []
    assert _recovery.adopt_descendants(_deadline(), token_for=_no_token, on_result=results.append)
    assert [r.sent for r in results] == [2]


def test_tree_stats_hold_this_process_and_its_descendants(leave_dead: LeaveDead) -> None:
    entry = registry.register(False)
    assert entry is not None
    Counters(entry.page).published = 7
    leave_dead(5, RUN)
    tree = _recovery.tree_stats("tree", None)
    assert tree.scope == "tree" and len(tree.processes) == 2
    assert tree.published == 12 and tree.spooled == 5 and tree.spool_pending == 5
    assert {p.state for p in tree.processes} == {"alive", "dead"}


def test_run_stats_hold_every_process_that_published_to_the_run(leave_dead: LeaveDead) -> None:
    leave_dead(5, RUN)
    leave_dead(1, str(uuid.uuid4()))
    stats = _recovery.tree_stats("run", RUN)
    assert stats.run_id == RUN and stats.root is None
    assert [p.runs for p in stats.processes] == [(RUN,)]


def test_run_stats_need_a_run() -> None:
    with pytest.raises(ValueError, match="run_id"):
        _recovery.tree_stats("run", None)


def test_a_killed_durable_descendants_backlog_is_adopted_and_its_books_close(
    leave_dead: LeaveDead, mock_server: StoringServer, route_deliverers: Route
) -> None:
    route_deliverers(mock_server)
    dead = leave_dead(6, RUN, durable=True)
    (before,) = _recovery.tree_stats("tree", None).processes
    assert before.state == "dead" and before.spool_pending == 6 and before.stats.queued == 0
    assert _recovery.flush_tree(_deadline(), None, own=None, token_for=_no_token)
    assert mock_server.seqs() == list(range(6))
    (after,) = _recovery.tree_stats("tree", None).processes
    assert after.iid == dead.name.partition("-")[2]
    assert after.spool_pending == 0 and after.stats.spooled == 6 and after.stats.spool_sent == 6


def test_a_live_descendant_with_queued_events_holds_the_flush_until_its_deadline() -> None:
    release_r, release_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            entry = registry.register(False)
            assert entry is not None
            Counters(entry.page).published = 5  # queued, never sent
            os.write(ready_w, b"1")
            os.read(release_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        assert not _recovery.flush_tree(_deadline(0.1), None, own=None, token_for=_no_token)
        (row,) = _recovery.tree_stats("tree", None).processes
        assert row.state == "alive" and row.stats.queued == 5 and not row.delivered
    finally:
        os.write(release_w, b"x")
        os.waitpid(pid, 0)
        for fd in (release_r, release_w, ready_r, ready_w):
            os.close(fd)
