"""The bounded, drop-oldest queue of one process, and the conditions around it.

One re-entrant lock guards the deque, the in-flight count and the counters: a SIGTERM
handler that flushes may interrupt the main thread inside ``put()``.

Waiting events are stored as ``(slot, bytes)``, the slot indexing a small table of the
destinations in the queue: such a tuple holds nothing the cyclic garbage collector tracks,
so the collector untracks it at its first pass and a full queue never ages into the older
generations (in a process with a large heap, such as a ZenML step, every promotion brings
the next full collection closer). ``take`` hands the sender ``(destination, bytes)``.

The batch the sender holds is tracked too (``held``: groups not yet posted, ``posting``: the
one on the wire and its Idempotency-Key), so that an exit path that runs out of budget can
spill every unsettled event to the spool (``take_unsettled``), the one in flight with its key.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from zstream_mp._stats import S_PUBLISHED, Counters

Item = tuple[Any, bytes]
"""``(destination, event bytes)``."""
Group = tuple[Any, list[bytes]]
"""``(destination, its events)``: one POST."""
Posting = tuple[Any, list[bytes], str]
"""The group on the wire and its Idempotency-Key."""
Settle = Callable[[bool, int], None]
"""Told whether a spilled in-flight batch was delivered after all, and its size."""


class EventQueue:
    durable = False

    def __init__(self, maxsize: int, counters: Counters | None = None) -> None:
        self.lock = threading.RLock()
        self.has_work = threading.Condition(self.lock)
        self.drained = threading.Condition(self.lock)
        self.items: deque[tuple[int, bytes]] = deque(maxlen=maxsize)
        """``(slot in _dests, event bytes)``."""
        self._dests: list[Any] = []
        self._slot_by_id: dict[int, int] = {}
        self._last_dest: Any = None
        self._last_slot = -1
        self.maxsize = maxsize
        self.in_flight = 0
        self.sender_waiting = False
        self.counters = counters if counters is not None else Counters()
        self._counter_page = self.counters.slots
        self.held: list[Group] = []
        self.posting: Posting | None = None
        self.settle_spilled: Settle | None = None
        """Set by the spill when it took the batch on the wire."""

    def append_locked(self, dest: Any, event: bytes) -> None:
        """Append; when full the oldest event is dropped and counted. Caller holds ``lock``."""
        slot = self._last_slot if dest is self._last_dest else self._slot_of(dest)
        items = self.items
        if len(items) >= self.maxsize:
            self.counters.dropped["overflow"] += 1
        items.append((slot, event))
        self._counter_page[S_PUBLISHED] += 1  # counters.published, without the property's call
        if self.sender_waiting:
            self.has_work.notify()

    def _slot_of(self, dest: Any) -> int:
        """The table slot of ``dest``; the table restarts whenever the queue is empty, so it
        holds only destinations with events waiting. Caller holds ``lock``."""
        if not self.items:
            self._dests.clear()
            self._slot_by_id.clear()
        slot = self._slot_by_id.get(id(dest))
        if slot is None:
            slot = self._slot_by_id[id(dest)] = len(self._dests)
            self._dests.append(dest)  # kept alive here, so its id() stays its own
        self._last_dest, self._last_slot = dest, slot
        return slot

    def _popleft(self) -> Item:
        slot, event = self.items.popleft()
        return self._dests[slot], event

    def take(self, limit: int, idle: float, max_bytes: int | None = None) -> list[Item] | None:
        """Up to ``limit`` events (and, past the first, ``max_bytes`` of them), waiting at
        most ``idle`` s for one; None when idle."""
        with self.lock:
            if not self.items:
                self.sender_waiting = True
                try:
                    self.has_work.wait(idle)
                finally:
                    self.sender_waiting = False
                if not self.items:
                    return None
            items = self.items
            count = min(limit, len(items))
            pop = self._popleft
            if max_bytes is None:
                batch = [pop() for _ in range(count)]
            else:
                batch = [pop()]
                size = len(batch[0][1])
                while len(batch) < count and size + len(items[0][1]) < max_bytes:
                    item = pop()
                    size += len(item[1]) + 1
                    batch.append(item)
            self.in_flight = len(batch)
            return batch

    def done(self) -> None:
        with self.lock:
            self.in_flight = 0
            self.drained.notify_all()

    def discard(self, reason: str) -> int:
        """Drop everything waiting, counted under ``reason``."""
        with self.lock:
            n = len(self.items)
            self.items.clear()
            self.counters.dropped[reason] += n
            self.drained.notify_all()
            return n

    def waiting(self) -> int:
        """Events not yet taken by the sender. Caller holds ``lock``."""
        return len(self.items)

    def retry_later(self) -> bool:
        """The batch on the wire failed for now: keep it to send again (durable log), or
        False when this queue cannot (memory: the sender's verdict stands)."""
        return False

    def hold(self, groups: list[Group]) -> None:
        with self.lock:
            self.held = groups

    def batch_key(self, group: Group) -> str | None:
        """A stable key for ``group``, where the queue can derive one (the durable log)."""
        return None

    def begin_post(self) -> Posting | None:
        """The next held group and its Idempotency-Key; None when the spill took the rest."""
        with self.lock:
            if not self.held:
                return None
            group = self.held.pop(0)
            key = self.batch_key(group) or str(uuid.uuid4())
            self.posting = (group[0], group[1], key)
            return self.posting

    def end_post(self) -> Settle | None:
        """The group on the wire is settled; the spill's callback if the spill took it.

        Caller holds ``lock``.
        """
        self.posting = None
        settle, self.settle_spilled = self.settle_spilled, None
        return settle

    def take_unsettled(self) -> tuple[Posting | None, list[Group]]:
        """Everything not yet settled, for the exit spill: the group on the wire (with its
        key), then the held groups and the waiting events, grouped by destination in order.

        Caller holds ``lock``. Afterwards the queue is empty and counts nothing in flight.
        """
        posting = self.posting
        groups: list[Group] = list(self.held)
        dests = self._dests
        for slot, event in self.items:
            dest = dests[slot]
            if groups and groups[-1][0] is dest:
                groups[-1][1].append(event)
            else:
                groups.append((dest, [event]))
        self.items.clear()
        self.held = []
        self.posting = None  # the spill owns it now; the sender's verdict goes to its settle
        self.in_flight = 0
        self.drained.notify_all()
        return posting, groups

    def pending(self) -> int:
        with self.lock:
            return len(self.items) + self.in_flight

    def wait_drained(self, deadline: float) -> bool:
        """True once nothing is waiting or in flight; False when ``deadline`` passes."""
        with self.lock:
            while self.waiting() or self.in_flight:
                if deadline == math.inf:
                    self.drained.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.drained.wait(remaining)
            return True
