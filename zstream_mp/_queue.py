"""The bounded, drop-oldest queue of one process, and the conditions around it.

One re-entrant lock guards the deque, the in-flight count and the counters: a SIGTERM
handler that flushes may interrupt the main thread inside ``put()``.

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

from zstream_mp._stats import Counters

Item = tuple[Any, bytes]
"""``(destination, event bytes)``."""
Group = tuple[Any, list[bytes]]
"""``(destination, its events)``: one POST."""
Settle = Callable[[bool, int], None]
"""Told whether a spilled in-flight batch was delivered after all, and its size."""


class EventQueue:
    durable = False

    def __init__(self, maxsize: int, counters: Counters | None = None) -> None:
        self.lock = threading.RLock()
        self.has_work = threading.Condition(self.lock)
        self.drained = threading.Condition(self.lock)
        self.items: deque[Item] = deque(maxlen=maxsize)
        self.maxsize = maxsize
        self.in_flight = 0
        self.sender_waiting = False
        self.counters = counters if counters is not None else Counters()
        self.held: list[Group] = []
        self.posting: tuple[Any, list[bytes], str] | None = None
        self.settle_spilled: Settle | None = None
        """Set by the exit spill when it took the batch on the wire."""

    def append_locked(self, item: Item) -> None:
        """Append; when full the oldest event is dropped and counted. Caller holds ``lock``."""
        items = self.items
        if len(items) >= self.maxsize:
            self.counters.dropped["overflow"] += 1
        items.append(item)
        self.counters.published += 1
        if self.sender_waiting:
            self.has_work.notify()

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
            if max_bytes is None:
                batch = [items.popleft() for _ in range(count)]
            else:
                batch = [items.popleft()]
                size = len(batch[0][1])
                while len(batch) < count and size + len(items[0][1]) < max_bytes:
                    item = items.popleft()
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

    def hold(self, groups: list[Group]) -> None:
        with self.lock:
            self.held = groups

    def batch_key(self, group: Group) -> str | None:
        """A stable key for ``group``, where the queue can derive one (the durable log)."""
        return None

    def begin_post(self) -> tuple[Any, list[bytes], str] | None:
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

    def take_unsettled(self) -> tuple[tuple[Any, list[bytes], str] | None, list[Group]]:
        """Everything not yet settled, for the exit spill: the group on the wire (with its
        key), then the held groups and the waiting events, grouped by destination in order.

        Caller holds ``lock``. Afterwards the queue is empty and counts nothing in flight.
        """
        posting = self.posting
        groups: list[Group] = list(self.held)
        for dest, event in self.items:
            if groups and groups[-1][0] is dest:
                groups[-1][1].append(event)
            else:
                groups.append((dest, [event]))
        self.items.clear()
        self.held = []
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
