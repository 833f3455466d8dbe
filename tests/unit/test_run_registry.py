"""`server.runs.RunRegistry`: seen runs listed in first-seen order, all three sets bounded."""

from __future__ import annotations

import time
import uuid

from zstream_mp.server.runs import RunRegistry


def test_runs_are_listed_in_the_order_first_seen_however_often_touched() -> None:
    runs = RunRegistry()
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    runs.create(first)
    runs.touch(second)
    runs.mark_ended(third)
    for _ in range(3):
        runs.touch(first)
    runs.mark_ended(first)
    assert runs.all() == [first, second, third]
    assert all(runs.seen(r) for r in (first, second, third))
    assert runs.ended(first) and runs.ended(third) and not runs.ended(second)


def test_seen_runs_are_bounded_in_count_oldest_touch_forgotten_first() -> None:
    runs = RunRegistry(max_runs=3)
    ids = [uuid.uuid4() for _ in range(5)]
    for run in ids[:3]:
        runs.touch(run)
    runs.touch(ids[0])  # refreshed: ids[1] is now the least recently touched
    runs.touch(ids[3])
    runs.touch(ids[4])
    assert runs.all() == [ids[0], ids[3], ids[4]]
    assert not runs.seen(ids[1]) and not runs.seen(ids[2])


def test_seen_runs_are_bounded_in_age() -> None:
    runs = RunRegistry(max_age=0.2)
    old = uuid.uuid4()
    runs.touch(old)
    time.sleep(0.3)
    fresh = uuid.uuid4()
    runs.touch(fresh)
    assert not runs.seen(old)
    assert runs.all() == [fresh]
