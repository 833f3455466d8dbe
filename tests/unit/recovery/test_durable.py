"""`_recovery/durable.DurableQueue`: the spool is the queue. Every event is on disk when
`append` returns; the sender reads batches back with keys recorded before each POST; what
the process leaves is an ordinary spool for an adopter. Driven as the sender drives it."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator

import pytest
from helpers.mock_server import SERVER, StoringServer, event_bytes

from zstream_mp._recovery import adopt, durable, registry, spool
from zstream_mp._recovery.durable import DurableQueue
from zstream_mp._stats import Counters
from zstream_mp._stream_context import Destination

RUN = str(uuid.uuid4())
DEST = Destination(run_id=RUN, server=SERVER, token="tok-1", prefix=b"")


@pytest.fixture
def entry() -> Iterator[registry.Entry]:
    made = registry.register(True)
    assert made is not None
    yield made


def _queue(entry: registry.Entry, max_bytes: int = 64 << 20) -> tuple[DurableQueue, Counters]:
    counters = Counters(entry.page)
    return DurableQueue(entry, counters, max_bytes), counters


def _send_one_batch(queue: DurableQueue, limit: int = 100) -> tuple[list[bytes], str]:
    """What the sender does for one batch that the server accepts: the events and key."""
    batch = queue.take(limit, idle=0.0)
    assert batch is not None
    events = [bytes(e) for _, e in batch]
    queue.hold([(batch[0][0], events)])
    posting = queue.begin_post()
    assert posting is not None
    queue.settle(len(events))
    queue.done()
    return events, posting[2]


def test_an_appended_event_is_in_the_spool_when_append_returns(entry: registry.Entry) -> None:
    queue, counters = _queue(entry)
    for seq in range(5):
        queue.append(DEST, event_bytes(seq, RUN))
    assert counters.published == 5
    records = spool.pending_records(queue.directory, 0)  # what another process reads
    assert [r.event for r in records] == [event_bytes(s, RUN) for s in range(5)]
    (dest,) = spool.read_dests(queue.directory)
    assert dest["run_id"] == RUN and "tok-1" not in str(dest)


def test_the_sender_reads_back_in_order_with_a_stable_key_recorded_first(
    entry: registry.Entry,
) -> None:
    queue, counters = _queue(entry)
    for seq in range(7):
        queue.append(DEST, event_bytes(seq, RUN))
    batch = queue.take(4, idle=0.0)
    assert batch is not None
    assert [bytes(e) for _, e in batch] == [event_bytes(s, RUN) for s in range(4)]
    queue.hold([(DEST, [bytes(e) for _, e in batch])])
    posting = queue.begin_post()
    assert posting is not None
    assert posting[2] == spool.batch_key(queue.iid, 0, 3)
    assert queue.page.inflight() == (0, 3, posting[2])  # before the POST
    queue.settle(4)
    queue.done()
    assert queue.page.resolved_below == 4 and spool.count_pending(queue.directory) == 3
    events, key = _send_one_batch(queue)
    assert events == [event_bytes(s, RUN) for s in range(4, 7)]
    assert key == spool.batch_key(queue.iid, 4, 6)
    assert counters.sent == 7 and queue.pending() == 0


def test_a_batch_to_retry_is_read_again_with_the_same_key(entry: registry.Entry) -> None:
    queue, _ = _queue(entry)
    for seq in range(3):
        queue.append(DEST, event_bytes(seq, RUN))
    first = queue.take(10, idle=0.0)
    assert first is not None
    assert queue.retry_later()
    again, key = _send_one_batch(queue)
    assert again == [bytes(e) for _, e in first]
    assert key == spool.batch_key(queue.iid, 0, 2)


def test_a_batch_holds_one_destination(entry: registry.Entry) -> None:
    queue, _ = _queue(entry)
    other = Destination(run_id=str(uuid.uuid4()), server=SERVER, token=None, prefix=b"")
    queue.append(DEST, event_bytes(0, RUN))
    queue.append(DEST, event_bytes(1, RUN))
    queue.append(other, event_bytes(2))
    first = queue.take(10, idle=0.0)
    assert first is not None and [d for d, _ in first] == [DEST, DEST]
    queue.done()
    second = queue.take(10, idle=0.0)
    assert second is not None and [d for d, _ in second] == [other]


def test_an_idle_take_returns_none(entry: registry.Entry) -> None:
    queue, _ = _queue(entry)
    assert queue.take(10, idle=0.0) is None


def test_what_a_leaving_process_left_is_delivered_by_an_adopter(entry: registry.Entry) -> None:
    queue, counters = _queue(entry)
    for seq in range(6):
        queue.append(DEST, event_bytes(seq, RUN))
    _send_one_batch(queue, limit=2)
    assert queue.leave_for_adoption("the exit budget ran out") == 4
    assert counters.spooled == 4
    queue.append(DEST, event_bytes(6, RUN))  # published after: stays for the adopter too
    assert queue.take(10, idle=0.0) is None  # this process sends no more
    assert queue.leave_for_adoption("again") == 0
    target = StoringServer()
    (found,) = spool.list_spools()
    result = adopt.adopt(found, time.monotonic() + 10, target.transport())
    assert result.complete and target.seqs() == [2, 3, 4, 5, 6]


def test_a_clean_exit_removes_a_settled_spool(entry: registry.Entry) -> None:
    queue, _ = _queue(entry)
    queue.append(DEST, event_bytes(0, RUN))
    queue.remove_if_settled()
    assert os.path.isdir(queue.directory)  # one event still unsettled
    _send_one_batch(queue)
    queue.remove_if_settled()
    assert not os.path.exists(queue.directory)


def test_a_spool_left_for_adoption_is_not_removed(entry: registry.Entry) -> None:
    queue, _ = _queue(entry)
    queue.append(DEST, event_bytes(0, RUN))
    _send_one_batch(queue)
    queue.leave_for_adoption("refused")
    queue.remove_if_settled()
    assert os.path.isdir(queue.directory)


def test_past_the_cap_events_are_dropped_as_spool_full_said_once(
    entry: registry.Entry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(durable, "SEGMENT_BYTES", 4096)
    queue, counters = _queue(entry, max_bytes=8192)
    big = b"x" * 1000
    for _ in range(12):
        queue.append(DEST, big)
    assert counters.published == 12
    assert counters.dropped["spool_full"] > 0
    kept = 12 - counters.dropped["spool_full"]
    assert spool.count_pending(queue.directory) == kept
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "spool_full" in warnings[0].getMessage()


def test_settled_segments_are_unlinked(
    entry: registry.Entry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable, "SEGMENT_BYTES", 4096)
    queue, _ = _queue(entry, max_bytes=1 << 20)
    for seq in range(40):
        queue.append(DEST, event_bytes(seq, RUN) + b" " * 200)
    assert len(spool.segments(queue.directory)) > 2
    while queue.pending():
        _send_one_batch(queue)
    assert len(spool.segments(queue.directory)) == 1


def test_a_muted_queue_drops_every_event(entry: registry.Entry) -> None:
    queue, counters = _queue(entry)
    queue.append(DEST, event_bytes(0, RUN))
    assert queue.mute() == 1
    queue.append(DEST, event_bytes(1, RUN))
    assert counters.dropped["muted"] == 2 and queue.pending() == 0


def test_nothing_is_ever_moved_by_a_spill(entry: registry.Entry) -> None:
    queue, _ = _queue(entry)
    queue.append(DEST, event_bytes(0, RUN))
    assert queue.spill_with(lambda posting, groups: pytest.fail("no spill")) == 0


def test_a_deduplicating_server_is_marked_in_the_spool(entry: registry.Entry) -> None:
    queue, _ = _queue(entry)
    queue.append(DEST, event_bytes(0, RUN))
    queue.server_deduplicates(SERVER)
    (dest,) = spool.read_dests(queue.directory)
    assert dest["deduplicates"] is True
