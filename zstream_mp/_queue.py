"""The queue of one process: the one seam between `publish()`, the sender and the spill.

`Queue` is what the rest of the publisher may do with a queue; two classes implement it:
`EventQueue` here (memory, 4,096 events, drop-oldest) and `DurableQueue` in the
recovery wing (the spool itself). Nothing outside them touches their lock, their counters or
their bookkeeping: `publish()` appends, the sender takes, posts and settles, the spill
takes what is unsettled through `spill_with`, and everyone else counts through `count`.

One re-entrant lock guards the events, the batch on the wire and the counters: a SIGTERM
handler that flushes may interrupt the main thread inside `append()`.

Waiting events are stored as `(slot, bytes)`, the slot indexing a small table of the
destinations in the queue: such a tuple holds nothing the cyclic garbage collector tracks,
so the collector untracks it at its first pass and a full queue never ages into the older
generations (in a process with a large heap, such as a ZenML step, every promotion brings
the next full collection closer). `take` hands the sender `(destination, bytes)`.

The batch the sender holds is tracked too (`held`: groups not yet posted, `posting`: the
one on the wire and its Idempotency-Key), so that a spill can take every unsettled event,
the one in flight with its key.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any, Protocol

from zstream_mp._stats import DROP_REASONS, S_DROPPED, S_PUBLISHED, Counters, PublisherStats

Queued = tuple[Any, bytes]
"""`(destination, event bytes)`."""
Group = tuple[Any, list[bytes]]
"""`(destination, its events)`: one POST."""
Posting = tuple[Any, list[bytes], str]
"""The group on the wire and its Idempotency-Key."""
Settle = Callable[[bool], bool]
"""Told whether a spilled batch that was on the wire was delivered after all; True when
that settles it as sent (it leaves the spool's count for the sent count)."""


@dataclass
class Spilled:
    """What a spill writer did with what it was handed."""

    kept: int = 0
    lost: int = 0
    settle: Settle | None = None
    """Who settles the batch that was on the wire, when the writer recorded it in flight."""


SpillWriter = Callable[["Posting | None", "list[Group]"], Spilled]
"""Writes what a spill took, under the queue's lock."""


class Queue(Protocol):
    """What the publisher does with a process's queue, memory or durable."""

    durable: bool

    def append(self, dest: Any, event: bytes) -> bool:
        """Queue one event (dropping the oldest when full); True when no sender takes."""

    def claim_taker(self) -> bool:
        """The caller becomes the sender, unless one runs already."""

    def retire_taker(self) -> bool:
        """The sender may stop: True (and it is stopped) when nothing is waiting."""

    def take(self, limit: int, idle: float, max_bytes: int | None = None) -> list[Queued] | None:
        """Up to `limit` events, waiting at most `idle` s for one; None when idle."""

    def hold(self, groups: list[Group]) -> None:
        """The taken batch, grouped by destination, each group one POST to come."""

    def begin_post(self) -> Posting | None:
        """The next held group and its Idempotency-Key; None when none is left."""

    def settle(self, n: int, dropped: str | None = None, batch: bool = True) -> None:
        """The verdict on the group on the wire: sent, or dropped for `dropped`."""

    def retry_later(self) -> bool:
        """Keep the batch on the wire to send again, where the queue can (durable)."""

    def done(self) -> None:
        """The taken batch is over."""

    def pending(self) -> int:
        """Events waiting or in flight."""

    def wait_drained(self, deadline: float) -> bool:
        """True once nothing is waiting or in flight; False when `deadline` passes."""

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name` (`retries`, `adopted`, `sent`, `spooled`)."""

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count `n` events dropped for `reason`."""

    def set_flag(self, flag: int) -> None:
        """Set a flag of the counter page (muted, exited)."""

    def given_up(self) -> int:
        """Events given up or set aside so far (refused, failed, spooled)."""

    def mute(self) -> int:
        """Refuse everything from now on, dropping what waits (counted as muted)."""

    def spill_with(self, writer: SpillWriter, only_posting: bool = False) -> int:
        """Hand `writer` every unsettled event (or only the batch on the wire); how
        many it kept."""

    def snapshot(self, pid: int, last_failure: str | None) -> PublisherStats:
        """The counters as a stats value."""


S_OVERFLOW = S_DROPPED + DROP_REASONS.index("overflow")
"""The counter page's slot of drops by overflow."""
GIVEN_UP = ("rejected", "failed", "spool_full")
"""Drops that make a flush say False. Not `muted` (the server has streaming off: ZenML's
publisher drops silently there too) nor `overflow` (newer events pushed out older ones)."""


class EventQueue:
    """The memory queue: bounded, drop-oldest, counted."""

    durable = False

    def __init__(self, maxsize: int, counters: Counters | None = None) -> None:
        self._lock = threading.RLock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release
        self._has_work = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._items: deque[tuple[int, bytes]] = deque(maxlen=maxsize)
        """`(slot in _dests, event bytes)`."""
        self._dests: list[Any] = []
        self._slot_by_id: dict[int, int] = {}
        self._last_dest: Any = None
        self._last_slot = -1
        self._maxsize = maxsize
        self._in_flight = 0
        self._taker_waiting = False
        self._taker = False
        self._muted = False
        self._counters = counters if counters is not None else Counters()
        self._counter_page = self._counters.slots
        self._held: list[Group] = []
        self._posting: Posting | None = None
        self._settle_spilled: Settle | None = None
        """Set by a spill that took the batch on the wire."""
        # Overflow is counted from these, not per append: every event appended is either
        # waiting, gone by `_left`, or pushed out by the deque (the full queue's append then
        # costs what a free one's does). Written to the page whenever the lock is held for
        # anything else: each take, snapshot, mute and spill.
        self._left = 0
        """Events that left the deque other than pushed out: taken, discarded, spilled."""
        self._not_appended = int(self._counter_page[S_PUBLISHED])
        """Published counts that were no append (early drops, what the page held before)."""
        self._overflow_counted = 0

    # ------------------------------------------------------------------ publish()

    def append(self, dest: Any, event: bytes) -> bool:
        # publish()'s path, kept to one call (each call is ~4% of a publish); the lock's
        # bound methods instead of `with` (~70 ns less)
        self._acquire()
        try:
            if self._muted:
                self._counters.dropped["muted"] += 1
                return False
            slot = self._last_slot if dest is self._last_dest else self._slot_of(dest)
            self._items.append((slot, event))  # full: the deque drops the oldest itself
            self._counter_page[S_PUBLISHED] += 1
            if self._taker_waiting:  # one wake-up is enough: later appends skip the notify
                self._taker_waiting = False  # (~0.4 µs each) until the taker has the GIL
                self._has_work.notify()
            return not self._taker
        finally:
            self._release()

    def _count_overflow(self) -> None:
        """Write the events the deque pushed out since the last call to the page.
        Caller holds `lock`."""
        if self.durable:
            return
        pushed_out = (
            self._counter_page[S_PUBLISHED] - self._not_appended - self._left - len(self._items)
        )
        if pushed_out != self._overflow_counted:
            self._counter_page[S_OVERFLOW] += pushed_out - self._overflow_counted
            self._overflow_counted = pushed_out

    def _slot_of(self, dest: Any) -> int:
        """The table slot of `dest`; the table restarts whenever the queue is empty, so it
        holds only destinations with events waiting. Caller holds `lock`."""
        if not self._items:
            self._dests.clear()
            self._slot_by_id.clear()
        slot = self._slot_by_id.get(id(dest))
        if slot is None:
            slot = self._slot_by_id[id(dest)] = len(self._dests)
            self._dests.append(dest)  # kept alive here, so its id() stays its own
        self._last_dest, self._last_slot = dest, slot
        return slot

    # ------------------------------------------------------------------ the sender

    def claim_taker(self) -> bool:
        with self._lock:
            if self._taker or self._muted:
                return False
            self._taker = True
            return True

    def retire_taker(self) -> bool:
        with self._lock:
            if self._waiting():
                return False
            self._taker = False
            return True

    def _waiting(self) -> int:
        """Events not yet taken by the sender. Caller holds `lock`."""
        return len(self._items)

    def _popleft(self) -> Queued:
        slot, event = self._items.popleft()
        return self._dests[slot], event

    def take(self, limit: int, idle: float, max_bytes: int | None = None) -> list[Queued] | None:
        with self._lock:
            if not self._items:
                self._taker_waiting = True
                try:
                    self._has_work.wait(idle)
                finally:
                    self._taker_waiting = False
                if not self._items:
                    return None
            items = self._items
            count = min(limit, len(items))
            pop = self._popleft
            if max_bytes is None:
                batch = self._take_count(count)
            else:
                batch = [pop()]
                size = len(batch[0][1])
                while len(batch) < count and size + len(items[0][1]) < max_bytes:
                    item = pop()
                    size += len(item[1]) + 1
                    batch.append(item)
            self._in_flight = len(batch)
            self._left += len(batch)
            self._count_overflow()
            return batch

    def _take_count(self, count: int) -> list[Queued]:
        """The oldest `count` events, in bulk (a batch of 1,000 in tens of microseconds,
        not one method call per event). Caller holds `lock`."""
        items = self._items
        if count == len(items):
            raw = list(items)
            items.clear()
        else:
            raw = list(islice(items, count))
            popleft = items.popleft
            for _ in repeat(None, count):
                popleft()
        dests = self._dests
        if len(dests) == 1:  # one destination waiting: every slot is 0
            only = dests[0]
            return [(only, event) for _, event in raw]
        return [(dests[slot], event) for slot, event in raw]

    def hold(self, groups: list[Group]) -> None:
        with self._lock:
            self._held = groups

    def _batch_key(self, group: Group) -> str | None:
        """A stable key for `group`, where the queue can derive one (the durable log)."""
        return None

    def begin_post(self) -> Posting | None:
        with self._lock:
            if not self._held:
                return None
            group = self._held.pop(0)
            key = self._batch_key(group) or str(uuid.uuid4())
            self._posting = (group[0], group[1], key)
            return self._posting

    def settle(self, n: int, dropped: str | None = None, batch: bool = True) -> None:
        with self._lock:
            self._posting = None
            settle, self._settle_spilled = self._settle_spilled, None
            counters = self._counters
            if settle is not None:  # a spill holds these events: settle them there
                if settle(dropped is None):
                    counters.spooled -= n
                    counters.sent += n
            elif dropped is None:
                counters.sent += n
            else:
                counters.dropped[dropped] += n
            if batch:
                counters.batches += 1

    def retry_later(self) -> bool:
        return False

    def done(self) -> None:
        with self._lock:
            self._in_flight = 0
            self._drained.notify_all()

    def pending(self) -> int:
        with self._lock:
            return self._waiting() + self._in_flight

    def wait_drained(self, deadline: float) -> bool:
        with self._lock:
            while self._waiting() or self._in_flight:
                if deadline == math.inf:
                    self._drained.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(remaining)
            return True

    # ------------------------------------------------------------------ counting

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            if name == "published":
                self._not_appended += n
            setattr(self._counters, name, getattr(self._counters, name) + n)

    def count_drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counters.dropped[reason] += n

    def set_flag(self, flag: int) -> None:
        with self._lock:
            self._counters.flags |= flag

    def given_up(self) -> int:
        with self._lock:
            counters = self._counters
            return int(counters.spooled) + sum(counters.dropped[r] for r in GIVEN_UP)

    def snapshot(self, pid: int, last_failure: str | None) -> PublisherStats:
        with self._lock:
            self._count_overflow()
            return self._counters.snapshot(
                pid, self._waiting() + self._in_flight, self._muted, last_failure
            )

    def mute(self) -> int:
        with self._lock:
            self._muted = True
            self._count_overflow()
            n = self._waiting()
            self._discard_waiting()
            self._counters.dropped["muted"] += n
            self._drained.notify_all()
            return n

    def _discard_waiting(self) -> None:
        self._left += len(self._items)
        self._items.clear()

    # ------------------------------------------------------------------ the spill

    def spill_with(self, writer: SpillWriter, only_posting: bool = False) -> int:
        with self._lock:
            posting: Posting | None
            groups: list[Group]
            if only_posting:
                if self._posting is None:
                    return 0
                posting, groups = self._posting, []  # the sender's verdict still settles it
            else:
                posting, groups = self._take_unsettled()
            result = writer(posting, groups)
            self._counters.spooled += result.kept
            self._counters.dropped["failed"] += result.lost
            if only_posting or posting is not None:
                self._settle_spilled = result.settle or _counted
            return result.kept

    def _take_unsettled(self) -> tuple[Posting | None, list[Group]]:
        """Everything not yet settled: the group on the wire (with its key), then the held
        groups and the waiting events, grouped by destination in order. Afterwards the
        queue is empty and counts nothing in flight. Caller holds `lock`."""
        self._count_overflow()
        posting = self._posting
        groups: list[Group] = list(self._held)
        dests = self._dests
        for slot, event in self._items:
            dest = dests[slot]
            if groups and groups[-1][0] is dest:
                groups[-1][1].append(event)
            else:
                groups.append((dest, [event]))
        self._left += len(self._items)
        self._items.clear()
        self._held = []
        self._posting = None  # the spill owns it now; the sender's verdict goes to its settle
        self._in_flight = 0
        self._drained.notify_all()
        return posting, groups


def _counted(delivered: bool) -> bool:
    """The verdict on a batch a spill has accounted for already."""
    return False
