"""`_recovery/spill.Spill`: what a process cannot deliver now goes to its own spool, in
order, once, counted; a batch on the wire is settled by its sender's verdict; the owner
delivers its own spool first. (The resume paths against a server: tests/unit/test_recovery.py.)"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import time
import uuid

import pytest
from helpers.mock_server import SERVER, StoringServer, event_bytes

from zstream_mp._queue import EventQueue
from zstream_mp._recovery import spool
from zstream_mp._recovery.spill import Spill
from zstream_mp._stream_context import Destination

RUN = str(uuid.uuid4())
DEST = Destination(run_id=RUN, server=SERVER, token="tok-1", prefix=b"")
OTHER = Destination(run_id=str(uuid.uuid4()), server=SERVER, token=None, prefix=b"")


def _queue(n: int, dest: Destination = DEST) -> EventQueue:
    queue = EventQueue(1000)
    for seq in range(n):
        queue.append(dest, event_bytes(seq, dest.run_id))
    return queue


def _on_the_wire(queue: EventQueue, n: int) -> str:
    """Take `n` events as one batch and start its POST; its Idempotency-Key."""
    batch = queue.take(n, idle=0.0)
    assert batch is not None
    queue.hold([(batch[0][0], [e for _, e in batch])])
    posting = queue.begin_post()
    assert posting is not None
    return posting[2]


def _awaiting(s: Spill) -> bool:
    return s.awaiting_verdict


def _seqs(s: Spill) -> list[int]:
    assert s.directory is not None
    records = spool.pending_records(s.directory, 0)
    return [json.loads(r.event)["payload"]["seq"] for r in records]


def test_nothing_to_spill_makes_no_spool() -> None:
    s = Spill("p1-abcd", 1 << 20)
    assert s.spill_unsettled(EventQueue(10), "why") == 0
    assert s.directory is None and not s.pending() and not s.due()
    assert spool.list_spools() == []


def test_the_batch_on_the_wire_goes_first_then_the_rest_in_order() -> None:
    queue = _queue(12)
    key = _on_the_wire(queue, 5)
    s = Spill("p1-abcd", 1 << 20)
    assert s.spill_unsettled(queue, "exit budget") == 12
    assert _seqs(s) == list(range(12))
    assert s.page is not None and s.page.inflight() == (0, 4, key)  # resent under its key
    assert queue.pending() == 0 and queue.snapshot(0, None).spooled == 12


def test_a_batch_that_cannot_have_landed_is_not_recorded_in_flight() -> None:
    queue = _queue(6)
    _on_the_wire(queue, 3)
    s = Spill("p1-abcd", 1 << 20)
    s.spill_unsettled(queue, "flush gave up", maybe_landed=False)
    assert s.page is not None and s.page.inflight() is None and not s.awaiting_verdict


def test_a_refused_batch_alone_is_kept_and_the_queue_goes_on() -> None:
    queue = _queue(8)
    _on_the_wire(queue, 3)
    s = Spill("p1-abcd", 1 << 20)
    assert s.spill_posting(queue, "HTTP 401") == 3
    queue.settle(3, "rejected")  # the sender's verdict on it: already accounted for
    queue.done()
    assert _seqs(s) == [0, 1, 2]
    stats = queue.snapshot(0, None)
    assert stats.spooled == 3 and stats.dropped["rejected"] == 0 and queue.pending() == 5


def test_spill_posting_without_a_batch_on_the_wire_keeps_nothing() -> None:
    s = Spill("p1-abcd", 1 << 20)
    assert s.spill_posting(_queue(4), "HTTP 401") == 0 and s.directory is None


def test_successive_spills_continue_the_sequence() -> None:
    s = Spill("p1-abcd", 1 << 20)
    s.spill_unsettled(_queue(3), "first")
    s.spill_unsettled(_queue(2, OTHER), "second")
    assert s.next_seq == 5 and len(spool.segments(s.directory or "")) == 2
    dests = spool.read_dests(s.directory or "")
    assert [d["run_id"] for d in dests] == [RUN, OTHER.run_id]
    assert [r.dest for r in spool.pending_records(s.directory or "", 0)] == [0, 0, 0, 1, 1]


def test_past_the_cap_the_events_are_lost_counted_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = _queue(50)
    s = Spill("p1-abcd", 100)
    assert s.spill_unsettled(queue, "exit budget") == 0
    stats = queue.snapshot(0, None)
    assert stats.dropped["failed"] == 50 and stats.spooled == 0
    assert any("could not be spooled either" in r.getMessage() for r in caplog.records)


def test_a_spill_that_goes_on_is_said_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="zstream_mp")
    s = Spill("p1-abcd", 1 << 20)
    for _ in range(3):
        s.spill_unsettled(_queue(1), "HTTP 401")
    levels = [r.levelno for r in caplog.records if "kept in the spool" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    s.spill_unsettled(_queue(1), "exit budget", final=True)  # leaving: always said
    assert caplog.records[-1].levelno == logging.WARNING


def test_a_landed_verdict_settles_the_batch_in_the_spool() -> None:
    queue = _queue(6)
    _on_the_wire(queue, 2)
    s = Spill("p1-abcd", 1 << 20)
    s.spill_unsettled(queue, "flush gave up")
    assert _awaiting(s) and not s.due()
    queue.settle(2)
    assert not _awaiting(s) and s.page is not None and s.page.resolved_below == 2
    stats = queue.snapshot(0, None)
    assert (stats.sent, stats.spooled) == (2, 4)


def test_a_failed_verdict_leaves_the_batch_in_the_spool() -> None:
    queue = _queue(6)
    _on_the_wire(queue, 2)
    s = Spill("p1-abcd", 1 << 20)
    s.spill_unsettled(queue, "flush gave up")
    queue.settle(2, "failed")
    assert s.page is not None and s.page.resolved_below == 0 and s.due()
    assert queue.snapshot(0, None).spooled == 6


def test_a_deduplicating_server_is_marked_in_an_existing_spool() -> None:
    s = Spill("p1-abcd", 1 << 20)
    s.server_deduplicates(SERVER)  # before any spill: remembered
    s.spill_unsettled(_queue(1), "why")
    (dest,) = spool.read_dests(s.directory or "")
    assert dest["deduplicates"] is True


def test_a_failed_resume_backs_off_before_the_next_try(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Spill("p1-abcd", 1 << 20)
    s.spill_unsettled(_queue(3), "why", maybe_landed=False)
    result = s.resume(StoringServer(status=503).transport(), time.monotonic() + 5, lambda _: None)
    assert not result.complete and s.pending() and not s.due()
    monkeypatch.setattr(s, "resume_after", 0.0)
    assert s.due()


def test_resume_without_a_spool_is_complete_at_once() -> None:
    s = Spill(None, 1 << 20)
    result = s.resume(StoringServer().transport(), time.monotonic() + 5, lambda _: None)
    assert result.complete and result.sent == 0
    assert s.name.startswith("p") and s.iid


def test_a_spill_cut_short_by_a_full_disk_counts_what_it_lost() -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            s = Spill("p1-abcd", 1 << 20)
            s.spill_unsettled(_queue(1), "first")  # the spool, its state page and dests
            queue = _queue(200)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (5000, hard))
            kept = s.spill_unsettled(queue, "exit budget", final=True)
            stats = queue.snapshot(0, None)
            readable = len(spool.pending_records(s.directory or "", 0)) - 1
            os.write(
                write_fd,
                json.dumps([kept, stats.spooled, stats.dropped["failed"], readable]).encode(),
            )
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        kept, spooled, failed, readable = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert readable < 200  # precondition: the limit did cut the segment
    assert kept == spooled == readable and failed == 200 - readable
