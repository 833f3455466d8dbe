"""The bounded, drop-oldest queue of one process, and the conditions around it.

One re-entrant lock guards the deque, the in-flight count and the counters: a SIGTERM
handler that flushes may interrupt the main thread inside ``put()``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

from zstream_mp._stats import Counters

Item = tuple[Any, bytes]
"""``(destination, event bytes)``."""


class EventQueue:
    def __init__(self, maxsize: int) -> None:
        self.lock = threading.RLock()
        self.has_work = threading.Condition(self.lock)
        self.drained = threading.Condition(self.lock)
        self.items: deque[Item] = deque(maxlen=maxsize)
        self.maxsize = maxsize
        self.in_flight = 0
        self.sender_waiting = False
        self.counters = Counters()

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

    def pending(self) -> int:
        with self.lock:
            return len(self.items) + self.in_flight

    def wait_drained(self, deadline: float) -> bool:
        """True once nothing is waiting or in flight; False when ``deadline`` passes."""
        with self.lock:
            while self.items or self.in_flight:
                if deadline == math.inf:
                    self.drained.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.drained.wait(remaining)
            return True
