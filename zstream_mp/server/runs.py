"""Which runs exist and which have ended: a dev server has no run database, so this is it.

Bounded in count and age: at most `max_runs` runs are remembered (created, ended and seen
separately), each for `max_age` seconds after it was last marked, oldest forgotten first.
A forgotten ended run behaves like a run still in progress (its subscribers read the
stream, whose `end` frame the broker still holds while it retains the stream); a forgotten
created run is unknown again under `strict`.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from uuid import UUID

RUN_ENTRY_CHARGE = 512
"""Bytes one remembered run costs in one of the three sets (UUID, stamps, two dict slots)."""

Cursor = tuple[float, str]
"""A run list position: (first seen, run id); pages start strictly past it."""


class _BoundedSet:
    """Insertion-ordered set that forgets entries beyond `limit` or older than `max_age`."""

    def __init__(self, limit: int, max_age: float) -> None:
        self._limit = limit
        self._max_age = max_age
        self._items: OrderedDict[UUID, float] = OrderedDict()  # by last mark, oldest first
        self._first: dict[UUID, int] = {}  # when each held item was first marked
        self._marks = 0

    def _expire(self, now: float) -> None:
        while self._items:
            oldest, stamp = next(iter(self._items.items()))
            if len(self._items) <= self._limit and now - stamp <= self._max_age:
                return
            del self._items[oldest]
            del self._first[oldest]

    def add(self, item: UUID) -> bool:
        now = time.monotonic()
        self._expire(now)
        fresh = item not in self._items
        if fresh:
            self._marks += 1
            self._first[item] = self._marks
        self._items[item] = now
        self._items.move_to_end(item)
        self._expire(now)
        return fresh

    def __contains__(self, item: UUID) -> bool:
        stamp = self._items.get(item)
        return stamp is not None and time.monotonic() - stamp <= self._max_age

    def __len__(self) -> int:
        return len(self._items)

    def in_first_order(self) -> list[UUID]:
        """Items still held, in the order they were first marked."""
        now = time.monotonic()
        self._expire(now)
        return sorted(self._items, key=self._first.__getitem__)


class _FirstSeenIndex:
    """Runs by the wall time they were first seen, so a page costs O(log n + page).

    Times are made strictly increasing, so rows are sorted by (time, id) as appended.
    Rows of forgotten runs are skipped when paging and dropped in bulk once they outnumber
    the live ones (amortised O(1) per run).
    """

    def __init__(self) -> None:
        self._rows: list[tuple[float, str, UUID]] = []  # a cursor, and the id parsed once
        self._time: dict[UUID, float] = {}
        self._last = 0.0

    def add(self, run_id: UUID) -> None:
        if run_id in self._time:
            return
        stamp = self._last = max(time.time(), self._last + 1e-6)
        self._time[run_id] = stamp
        self._rows.append((stamp, str(run_id), run_id))

    def first_seen(self, run_id: UUID) -> float | None:
        return self._time.get(run_id)

    def forget(self, run_id: UUID) -> None:
        self._time.pop(run_id, None)

    def compact(self, held: _BoundedSet) -> None:
        if len(self._rows) <= 2 * len(held) + 1024:
            return
        self._time = {run: t for run, t in self._time.items() if run in held}
        self._rows = [row for row in self._rows if row[2] in self._time]

    def page(
        self, held: _BoundedSet, newest_first: bool, cursor: Cursor | None, limit: int
    ) -> list[tuple[float, str, UUID]]:
        self.compact(held)
        rows = self._rows
        found: list[tuple[float, str, UUID]] = []
        if newest_first:
            at = bisect.bisect_left(rows, cursor) if cursor else len(rows)
            step, at = -1, at - 1
        else:
            at = bisect.bisect_right(rows, cursor) if cursor else 0
            while cursor and at < len(rows) and rows[at][:2] <= cursor:
                at += 1  # a row is longer than its cursor, so bisect puts it after
            step = 1
        times = self._time
        while 0 <= at < len(rows) and len(found) < limit:
            row = rows[at]
            if times.get(row[2]) == row[0] and row[2] in held:
                found.append(row)
            at += step
        return found


class RunRegistry:
    """Runs created, published to or ended through this server, in the order first seen.

    With `strict` only created runs are known (others get 404); without it any run id is
    accepted, and the registry still remembers which ones it has seen so they can be listed.
    """

    def __init__(
        self, strict: bool = False, max_runs: int = 100_000, max_age: float = 3600.0
    ) -> None:
        self.strict = strict
        self._created = _BoundedSet(max_runs, max_age)
        self._ended = _BoundedSet(max_runs, max_age)
        self._seen = _BoundedSet(max_runs, max_age)
        self._index = _FirstSeenIndex()

    def _see(self, run_id: UUID) -> None:
        if self._seen.add(run_id):
            self._index.forget(run_id)  # seen again after being forgotten: a new first time
        self._index.add(run_id)

    def create(self, run_id: UUID) -> bool:
        """Register a run (or refresh it); False when it already existed."""
        self._see(run_id)
        return self._created.add(run_id)

    def touch(self, run_id: UUID) -> None:
        """Remember a run that events were published to."""
        self._see(run_id)

    def known(self, run_id: UUID) -> bool:
        return not self.strict or run_id in self._created

    def seen(self, run_id: UUID) -> bool:
        """Created, published to or ended through this server process."""
        return run_id in self._seen

    def all(self) -> list[UUID]:
        """Every run still remembered as seen, in the order first seen."""
        return self._seen.in_first_order()

    def ended(self, run_id: UUID) -> bool:
        return run_id in self._ended

    def mark_ended(self, run_id: UUID) -> bool:
        """Mark a run ended; False when it already was."""
        self._see(run_id)
        return self._ended.add(run_id)

    def approx_bytes(self) -> int:
        """Memory held, estimated per entry (counted against the memory broker's cap)."""
        return RUN_ENTRY_CHARGE * (len(self._created) + len(self._ended) + len(self._seen))

    def first_seen(self, run_id: UUID) -> float | None:
        """Wall time this process first saw the run (created, published to or ended)."""
        return self._index.first_seen(run_id) if run_id in self._seen else None

    def page(
        self, newest_first: bool, cursor: Cursor | None, limit: int
    ) -> list[tuple[float, str, UUID]]:
        """One page of runs still remembered, by first seen, strictly past `cursor`:
        `(first seen, id, id as UUID)` rows."""
        return self._index.page(self._seen, newest_first, cursor, limit)

    def __len__(self) -> int:
        """Entries held (created plus ended), for tests and status."""
        return len(self._created) + len(self._ended)


def not_found_message(run_id: UUID) -> str:
    """ZenML's 404 text: `str(KeyError(...))`, quotes included."""
    return str(
        KeyError(
            f"Unable to get pipeline run with ID '{run_id}': No pipeline run with this ID found"
        )
    )
