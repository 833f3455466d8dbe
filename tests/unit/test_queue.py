"""``_queue.EventQueue``: drop-oldest accounting, the in-flight count, drain deadlines."""

from __future__ import annotations

import math
import threading
import time

from zstream_mp._queue import EventQueue


def _fill(q: EventQueue, n: int, start: int = 0) -> None:
    with q.lock:
        for i in range(start, start + n):
            q.append_locked("dest", str(i).encode())


def test_full_queue_drops_the_oldest_and_counts_each_drop() -> None:
    q = EventQueue(4)
    _fill(q, 7)
    assert [item[1] for item in q.items] == [b"3", b"4", b"5", b"6"]
    assert q.counters.published == 7
    assert q.counters.dropped["overflow"] == 3


def test_take_moves_events_in_flight_until_done() -> None:
    q = EventQueue(10)
    _fill(q, 5)
    batch = q.take(3, idle=0.0)
    assert batch is not None and [b for _, b in batch] == [b"0", b"1", b"2"]
    assert q.in_flight == 3 and q.pending() == 5
    q.done()
    assert q.in_flight == 0 and q.pending() == 2


def test_take_returns_none_when_idle() -> None:
    q = EventQueue(10)
    started = time.monotonic()
    assert q.take(10, idle=0.05) is None
    assert time.monotonic() - started >= 0.04
    assert not q.sender_waiting


def test_append_wakes_a_waiting_taker() -> None:
    q = EventQueue(10)
    got: list[object] = []
    taker = threading.Thread(target=lambda: got.append(q.take(10, idle=10.0)))
    taker.start()
    while not q.sender_waiting:
        time.sleep(0.001)
    _fill(q, 1)
    taker.join(5)
    assert got and got[0] == [("dest", b"0")]


def test_discard_counts_under_its_reason_and_leaves_in_flight_alone() -> None:
    q = EventQueue(10)
    _fill(q, 6)
    q.take(2, idle=0.0)
    assert q.discard("muted") == 4
    assert q.counters.dropped["muted"] == 4
    assert q.pending() == 2


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
