"""`_queue.EventQueue` through its seam (`Queue`): drop-oldest accounting, the sender's
claim, verdicts, spills, drain deadlines. Nothing here touches the queue's internals."""

from __future__ import annotations

import math
import threading
import time

from zstream_mp._queue import EventQueue, Group, Posting, Queue, Spilled


def _fill(q: Queue, n: int, start: int = 0, dest: str = "dest") -> None:
    for i in range(start, start + n):
        q.append(dest, str(i).encode())


def _stats(q: EventQueue) -> dict[str, object]:
    s = q.snapshot(0, None)
    return {"published": s.published, "sent": s.sent, "queued": s.queued, **s.dropped}


def test_full_queue_drops_the_oldest_and_counts_each_drop() -> None:
    q = EventQueue(4)
    _fill(q, 7)
    batch = q.take(10, idle=0.0)
    assert batch is not None and [e for _, e in batch] == [b"3", b"4", b"5", b"6"]
    stats = _stats(q)
    assert stats["published"] == 7 and stats["overflow"] == 3


def test_append_says_when_nobody_takes_and_the_claim_is_exclusive() -> None:
    q = EventQueue(10)
    assert q.append("d", b"0") is True
    assert q.claim_taker() is True
    assert q.claim_taker() is False
    assert q.append("d", b"1") is False
    assert q.retire_taker() is False  # events wait: the sender may not stop
    q.take(10, idle=0.0)
    q.done()
    assert q.retire_taker() is True
    assert q.append("d", b"2") is True


def test_take_moves_events_in_flight_until_done() -> None:
    q = EventQueue(10)
    _fill(q, 5)
    batch = q.take(3, idle=0.0)
    assert batch is not None and [b for _, b in batch] == [b"0", b"1", b"2"]
    assert q.pending() == 5
    q.done()
    assert q.pending() == 2


def test_take_returns_none_when_idle() -> None:
    q = EventQueue(10)
    started = time.monotonic()
    assert q.take(10, idle=0.05) is None
    assert time.monotonic() - started >= 0.04


def test_append_wakes_a_waiting_taker() -> None:
    q = EventQueue(10)
    got: list[object] = []
    taker = threading.Thread(target=lambda: got.append(q.take(10, idle=10.0)))
    taker.start()
    time.sleep(0.05)
    _fill(q, 1)
    taker.join(5)
    assert got and got[0] == [("dest", b"0")]


def test_settle_counts_sent_or_dropped_once_per_group() -> None:
    q = EventQueue(10)
    _fill(q, 3, dest="a")
    _fill(q, 2, start=3, dest="b")
    batch = q.take(10, idle=0.0)
    assert batch is not None
    q.hold([("a", [e for d, e in batch if d == "a"]), ("b", [e for d, e in batch if d == "b"])])
    first = q.begin_post()
    assert first is not None and first[0] == "a" and len(first[2]) == 36  # a fresh key
    q.settle(3)
    second = q.begin_post()
    assert second is not None and second[0] == "b"
    q.settle(2, "rejected")
    assert q.begin_post() is None
    q.done()
    stats = _stats(q)
    assert stats["sent"] == 3 and stats["rejected"] == 2 and q.given_up() == 2


def test_mute_drops_what_waits_and_refuses_later_events() -> None:
    q = EventQueue(10)
    _fill(q, 6)
    q.take(2, idle=0.0)
    assert q.mute() == 4
    assert q.append("d", b"x") is False
    assert q.claim_taker() is False
    assert _stats(q)["muted"] == 5
    assert q.pending() == 2  # what is in flight is the sender's to settle


def test_spill_takes_the_batch_on_the_wire_first_then_everything_in_order() -> None:
    q = EventQueue(10)
    _fill(q, 2, dest="a")
    batch = q.take(2, idle=0.0)
    assert batch is not None
    q.hold([("a", [e for _, e in batch])])
    on_wire = q.begin_post()
    _fill(q, 2, start=2, dest="b")
    seen: list[tuple[Posting | None, list[Group]]] = []
    verdicts: list[bool] = []

    def writer(posting: Posting | None, groups: list[Group]) -> Spilled:
        seen.append((posting, groups))
        return Spilled(kept=4, settle=lambda delivered: verdicts.append(delivered) or delivered)

    assert q.spill_with(writer) == 4
    assert seen == [(on_wire, [("b", [b"2", b"3"])])]
    assert q.pending() == 0 and q.wait_drained(time.monotonic())
    assert _stats(q)["queued"] == 0 and q.given_up() == 4
    q.settle(2)  # the sender's answer for the batch that was on the wire: delivered
    assert verdicts == [True]
    stats = _stats(q)
    assert stats["sent"] == 2 and q.given_up() == 2  # it left the spool's count


def test_spill_of_the_batch_on_the_wire_alone_leaves_the_rest_waiting() -> None:
    q = EventQueue(10)
    _fill(q, 3)
    batch = q.take(2, idle=0.0)
    assert batch is not None
    q.hold([("dest", [e for _, e in batch])])
    q.begin_post()

    def writer(posting: Posting | None, groups: list[Group]) -> Spilled:
        assert posting is not None and not groups  # the batch on the wire, with its key
        return Spilled(kept=len(posting[1]))

    kept = q.spill_with(writer, only_posting=True)
    assert kept == 2
    q.settle(2, "rejected")  # counted by the spill already: not dropped again
    q.done()
    assert _stats(q)["rejected"] == 0 and q.pending() == 1


def test_a_spill_that_cannot_write_counts_the_events_as_failed() -> None:
    q = EventQueue(10)
    _fill(q, 3)
    assert q.spill_with(lambda posting, groups: Spilled(lost=3)) == 0
    assert _stats(q)["failed"] == 3 and q.given_up() == 3


def test_count_adds_to_named_counters() -> None:
    q = EventQueue(4)
    q.count("retries", 2)
    q.count("adopted", 5)
    s = q.snapshot(0, "x")
    assert s.retries == 2 and s.adopted == 5 and s.last_failure == "x"


def test_wait_drained_true_when_empty() -> None:
    assert EventQueue(4).wait_drained(time.monotonic()) is True


def test_wait_drained_false_at_the_deadline_with_events_in_flight() -> None:
    q = EventQueue(4)
    _fill(q, 1)
    q.take(1, idle=0.0)
    started = time.monotonic()
    assert q.wait_drained(started + 0.05) is False
    assert 0.04 <= time.monotonic() - started < 2.0


def test_wait_drained_past_deadline_returns_at_once() -> None:
    q = EventQueue(4)
    _fill(q, 1)
    started = time.monotonic()
    assert q.wait_drained(started - 1.0) is False
    assert time.monotonic() - started < 0.5


def test_wait_drained_wakes_on_done_even_without_a_deadline() -> None:
    q = EventQueue(4)
    _fill(q, 2)
    q.take(2, idle=0.0)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(q.wait_drained(math.inf)))
    waiter.start()
    time.sleep(0.02)
    assert not result
    q.done()
    waiter.join(5)
    assert result == [True]


def test_overflow_is_counted_exactly_however_the_events_leave() -> None:
    """Drops of the full queue are counted from what was appended and what left, not per
    append: a snapshot, a take, a mute and a spill each see the exact count."""
    q = EventQueue(4)
    q.count("published", 2)  # counted elsewhere (early drops): never an overflow
    _fill(q, 6)
    assert _stats(q)["overflow"] == 2  # a snapshot, no take yet
    q.take(3, idle=0.0)
    q.done()
    _fill(q, 5, start=6)  # 1 waiting + 5: two pushed out
    assert _stats(q)["overflow"] == 4
    assert q.mute() == 4
    stats = _stats(q)
    assert stats["overflow"] == 4 and stats["muted"] == 4 and stats["published"] == 13


def test_a_spill_sees_the_overflow_before_it_takes_the_rest() -> None:
    q = EventQueue(3)
    _fill(q, 5)
    kept = q.spill_with(lambda posting, groups: Spilled(kept=sum(len(g[1]) for g in groups)))
    assert kept == 3
    _fill(q, 1, start=5)
    assert _stats(q)["overflow"] == 2
