"""`_recovery/registry`: one entry per publishing process (identity and a live counter
page), read by others; the sweep removes what dead processes left and nothing else."""

from __future__ import annotations

import json
import logging
import os
import stat
import uuid
from pathlib import Path

import pytest
from filelock import FileLock
from helpers.dead_publisher import LeaveDead

from zstream_mp._recovery import registry, spool
from zstream_mp._recovery.liveness import own_identity, start_of
from zstream_mp._recovery.statedir import state_dir
from zstream_mp._stats import S_SPOOL_SENT, Counters
from zstream_mp._wire import ENV_CONTEXT

RUN = str(uuid.uuid4())


def _found(name: str) -> registry.Found:
    (found,) = [f for f in registry.scan() if f.name == name]
    return found


def _files(name: str) -> list[str]:
    return sorted(p for p in os.listdir(registry.procs_dir()) if p.startswith(name))


def test_an_entry_is_two_private_files_named_after_the_process() -> None:
    entry = registry.register(False)
    assert entry is not None
    pid, start = own_identity()
    assert entry.name == f"p{pid}-{entry.iid}"
    assert _files(entry.name) == [entry.name + ".ctr", entry.name + ".json"]
    for name in _files(entry.name):
        assert stat.S_IMODE(os.stat(os.path.join(registry.procs_dir(), name)).st_mode) == 0o600
    identity = json.loads(Path(entry.json_path).read_text())
    assert (identity["pid"], identity["start"], identity["durable"]) == (pid, start, False)
    assert identity["ancestors"][0] == [os.getppid(), start_of(os.getppid())]


def test_two_entries_of_one_process_have_their_own_iids() -> None:
    first, second = registry.register(False), registry.register(True)
    assert first is not None and second is not None and first.iid != second.iid


def test_a_run_is_noted_once_with_its_token_file() -> None:
    entry = registry.register(False)
    assert entry is not None
    entry.note_run(RUN, "/state/token-abc")
    entry.note_run(RUN, "/state/token-other")  # the same run again: no write
    other = str(uuid.uuid4())
    entry.note_run(other, None)
    identity = json.loads(Path(entry.json_path).read_text())
    assert identity["runs"] == sorted([RUN, other])
    assert identity["token_files"] == ["/state/token-abc"]


@pytest.mark.parametrize(
    ("context", "origin"),
    [
        ('{"run_id": "r", "origin": 4242}', 4242),
        ('{"run_id": "r", "origin": "4242"}', None),
        ('{"run_id": "r"}', None),
        ("not json", None),
        ("[1, 2]", None),
    ],
)
def test_the_origin_is_read_from_the_handed_down_context(
    monkeypatch: pytest.MonkeyPatch, context: str, origin: int | None
) -> None:
    monkeypatch.setenv(ENV_CONTEXT, context)
    entry = registry.register(False)
    assert entry is not None and entry.identity["origin"] == origin


def test_without_a_usable_state_dir_publishing_goes_on_without_an_entry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Path(state_dir(), "procs").write_text("in the way")
    assert registry.register(False) is None
    assert any("without its registry entry" in r.getMessage() for r in caplog.records)


def test_others_read_the_counters_live_and_see_it_alive() -> None:
    entry = registry.register(False)
    assert entry is not None
    counters = Counters(entry.page)
    counters.published = 9
    counters.sent = 4
    found = _found(entry.name)
    assert found.alive and found.state == "alive" and found.pid == os.getpid()
    row = found.row()
    assert (row.stats.published, row.stats.sent, row.stats.queued) == (9, 4, 5)
    counters.sent = 9
    assert _found(entry.name).row().stats.queued == 0


def test_a_process_killed_with_its_spool_is_dead_with_events_pending(
    leave_dead: LeaveDead,
) -> None:
    dead = leave_dead(5, RUN)
    found = _found(dead.name)
    assert not found.alive and found.state == "dead" and found.spool is not None
    row = found.row()
    assert row.runs == (RUN,) and row.stats.spooled == 5 and row.spool_pending == 5
    assert found.descends_from(*own_identity())
    assert not found.descends_from(os.getpid(), 1)  # another process that had our pid


def test_a_process_whose_exit_hook_finished_is_exited(leave_dead: LeaveDead) -> None:
    dead = leave_dead(0, RUN, exited=True)
    assert _found(dead.name).state == "exited"


def test_an_entry_with_a_torn_identity_is_still_seen_by_its_name(leave_dead: LeaveDead) -> None:
    dead = leave_dead(3, RUN)
    Path(registry.procs_dir(), dead.name + ".json").write_text("{torn")
    found = _found(dead.name)
    assert found.pid == dead.pid and not found.alive


def test_files_that_are_not_entries_are_skipped() -> None:
    directory = registry.procs_dir()
    Path(directory, "junk.txt").write_text("x")
    Path(directory, "short.ctr").write_bytes(b"\0" * 8)  # a torn counter page
    assert registry.scan() == []


def test_an_adopter_adds_to_a_dead_processs_books(leave_dead: LeaveDead) -> None:
    dead = leave_dead(5, RUN)
    registry.add_to_slot(dead.name, S_SPOOL_SENT, 2)
    registry.add_to_slot(dead.name, S_SPOOL_SENT, 1)
    assert _found(dead.name).row().spool_pending == 2
    registry.add_to_slot(dead.name, S_SPOOL_SENT, 5, absolute=True)
    assert _found(dead.name).row().spool_pending == 0
    registry.add_to_slot("p1-missing", S_SPOOL_SENT, 1)  # gone meanwhile: nothing happens


def test_the_sweep_removes_dead_entries_keeps_live_ones_and_unsettled_spools(
    leave_dead: LeaveDead,
) -> None:
    alive = registry.register(False)
    assert alive is not None
    gone = leave_dead(0, RUN)
    kept = leave_dead(4, RUN)
    removed = registry.sweep()
    assert removed is not None and removed >= 2
    names = {f.name for f in registry.scan()}
    assert alive.name in names and kept.name in names and gone.name not in names
    assert [s.entry_name for s in spool.list_spools()] == [kept.name]


def test_an_exited_entry_stays_for_the_grace_period(leave_dead: LeaveDead) -> None:
    exited = leave_dead(0, RUN, exited=True)
    registry.sweep()
    assert exited.name in {f.name for f in registry.scan()}
    registry.sweep(grace=0.0)
    assert exited.name not in {f.name for f in registry.scan()}


def test_a_spool_undelivered_past_its_retention_is_removed_with_a_warning(
    leave_dead: LeaveDead, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(registry, "SPOOL_RETENTION", -1.0)
    dead = leave_dead(3, RUN)
    registry.sweep()
    assert spool.list_spools() == []
    assert dead.name not in {f.name for f in registry.scan()}
    assert any(
        r.levelno == logging.WARNING and "undelivered" in r.getMessage() for r in caplog.records
    )


def test_a_settled_spool_whose_entry_is_gone_is_removed() -> None:
    orphan = os.path.join(spool.spool_root(), "p1-0000aaaa")
    spool.ensure_dir(orphan)
    registry.sweep()
    assert not os.path.exists(orphan)


def test_the_sweep_skips_while_another_process_sweeps(leave_dead: LeaveDead) -> None:
    gone = leave_dead(0, RUN)
    lock = FileLock(os.path.join(state_dir(), "registry.lock"), is_singleton=False)
    with lock:
        assert registry.sweep() is None
    assert gone.name in {f.name for f in registry.scan()}
