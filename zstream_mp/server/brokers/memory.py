"""In-process broker: integer ids per stream, bounded length, TTL since last publish.

Good for one server process (development, tests, the demo). Unlike ZenML's in-memory broker
it bounds what clients can make it hold:

* a stream exists only once something was published to it (reading never creates one);
* idle streams expire `ttl_seconds` after their last publish (swept at most once a minute);
* all streams together hold at most `max_bytes`, counting what they really cost: each
  entry's frame plus `_ENTRY_CHARGE` (its tuple, id and bytes object), each stream's
  `_STREAM_CHARGE`, and whatever else the server keeps in memory per client (`also_held`:
  run registry, idempotency records); a publish that would pass it raises
  `BrokerFullError` (the server answers 503);
* the next id of an expired stream is remembered for the last `_ID_MEMORY` streams, so a
  live reader's cursor does not point past a recreated stream's ids.

Ids are integers counting up per stream from `id_base + 1`. The server passes a base from
the clock at its start (`epoch_id_base`), so a restarted server's ids are greater than any
its previous process gave out (a client's old cursor never hides new events, and a page
that remembers ids never mistakes a new event for one it has shown). A cursor at or below
the base, or past the stream's last id, cannot be continued (`cursor_restarted`): its
subscriber gets `gap: restart`, then the stream from its start.

A read costs what it returns, not what is retained: ids in a stream are consecutive, so
the first entry after a cursor is found by arithmetic and reached by index.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from zstream_mp.errors import BrokerFullError
from zstream_mp.server.brokers.base import BrokerEntry, StreamBroker, shown_cursor
from zstream_mp.server.brokers.run_meta import BatchFacts, RunMeta

_CURSOR = re.compile(r"^\d{1,20}$")
_STREAM_CHARGE = 1024
"""Bytes charged per stream against `max_bytes` for its bookkeeping (object, deque, key)."""
_ENTRY_CHARGE = 144
"""Bytes charged per entry beyond its frame: measured ~133 (deque slot, tuple, int id,
bytes header) plus allocator slack."""
_ID_MEMORY = 100_000
_EPOCH_MS = 1_704_067_200_000
"""2024-01-01 UTC, in Unix milliseconds."""
_IDS_PER_MS = 1_000
"""Ids one stream may take per millisecond of a server's life before the next process's
ids could reach them: a million a second, far beyond what one process ingests."""


def epoch_id_base(now: float | None = None) -> int:
    """Milliseconds since 2024 times `_IDS_PER_MS` (about 10**14 today): greater than any
    id an earlier process gave out, and an exact JavaScript number for centuries."""
    ms = int((time.time() if now is None else now) * 1000) - _EPOCH_MS
    return max(ms, 0) * _IDS_PER_MS


def _cost(payload: bytes) -> int:
    return len(payload) + _ENTRY_CHARGE


_STAMP_S = 0.01
"""Receive times are kept to 10 ms: batches closer together share their first one's."""
_STAMP_CHARGE = 64
"""Bytes charged per receive-time stamp (a tuple in a deque) against `max_bytes`."""


class _Stream:
    def __init__(self, max_len: int, next_id: int) -> None:
        self.entries: deque[tuple[int, bytes]] = deque()
        self.max_len = max_len
        self.bytes = _STREAM_CHARGE
        self.next_id = next_id
        self.touched = time.monotonic()
        self.times: deque[tuple[int, float]] = deque()  # (first id of a batch, receive time)
        self.meta = RunMeta()

    def stamp(self, first_id: int, now: float) -> int:
        """Remember the batch starting at `first_id` arrived at `now` (to `_STAMP_S`: one
        stamp per batch at most, fewer under load) and forget trimmed ones; returns the
        bytes this adds to the stream's charge (negative when it frees some)."""
        charge = 0
        if not self.times or now - self.times[-1][1] >= _STAMP_S:
            self.times.append((first_id, now))
            charge += _STAMP_CHARGE
        oldest = self.entries[0][0] if self.entries else first_id
        while len(self.times) > 1 and self.times[1][0] <= oldest:
            self.times.popleft()
            charge -= _STAMP_CHARGE
        return charge

    def received_at(self, entry_id: int) -> float | None:
        at = bisect.bisect_right(self.times, (entry_id, float("inf"))) - 1
        return self.times[at][1] if at >= 0 else None

    def extend(self, payloads: list[bytes], cost: int) -> tuple[int, int]:
        """Append `payloads` (costing `cost` bytes together) under consecutive ids; returns
        the first id and the bytes freed by trimming to `max_len`."""
        first = self.next_id
        self.next_id += len(payloads)
        self.entries.extend(zip(range(first, self.next_id), payloads, strict=True))
        freed = 0
        for _ in range(len(self.entries) - self.max_len):
            freed += _cost(self.entries.popleft()[1])
        self.bytes += cost - freed
        return first, freed

    def after(self, cursor: int, max_count: int) -> list[BrokerEntry]:
        """Up to `max_count` entries after `cursor`: found by arithmetic (ids are
        consecutive), reached by index, so the cost is what is returned."""
        entries = self.entries
        if not entries or cursor >= entries[-1][0]:
            return []
        start = max(0, cursor - entries[0][0] + 1)
        stop = min(len(entries), start + max_count)
        return [BrokerEntry(str(entries[i][0]), entries[i][1]) for i in range(start, stop)]


class InMemoryBroker(StreamBroker):
    """Streams kept in this process; `max_len` entries each, dropped `ttl_seconds` after use."""

    def __init__(
        self,
        max_len: int = 10_000,
        ttl_seconds: float = 3600.0,
        max_bytes: int = 256 * 1024 * 1024,
        id_base: int = 0,
    ) -> None:
        if max_len < 1 or ttl_seconds <= 0 or max_bytes < 1 or id_base < 0:
            raise ValueError("max_len and max_bytes must be >= 1, ttl_seconds > 0 and id_base >= 0")
        self._id_base = id_base
        self.also_held: Callable[[], int] = lambda: 0
        """Bytes the server holds elsewhere per client (run registry, idempotency
        records), counted against `max_bytes` with the frames."""
        self._max_len = max_len
        self._ttl = ttl_seconds
        self._max_bytes = max_bytes
        self._bytes = 0
        self._streams: dict[str, _Stream] = {}
        self._next_ids: OrderedDict[str, int] = OrderedDict()
        self._last_sweep = time.monotonic()
        self._changed = asyncio.Event()
        self._watchers: list[Callable[[str], None]] = []

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def stream_count(self) -> int:
        return len(self._streams)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def _drop(self, key: str, stream: _Stream) -> None:
        del self._streams[key]
        self._bytes -= stream.bytes
        self._next_ids[key] = stream.next_id
        self._next_ids.move_to_end(key)
        while len(self._next_ids) > _ID_MEMORY:
            self._next_ids.popitem(last=False)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < min(self._ttl, 60.0):
            return
        self._last_sweep = now
        for key, stream in list(self._streams.items()):
            if now - stream.touched > self._ttl:
                self._drop(key, stream)

    def _get(self, key: str) -> _Stream | None:
        stream = self._streams.get(key)
        if stream is not None and time.monotonic() - stream.touched > self._ttl:
            self._drop(key, stream)
            return None
        return stream

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # -- StreamBroker ----------------------------------------------------------------------
    async def publish(self, stream_key: str, payloads: list[bytes]) -> str | None:
        self._sweep()
        stream = self._get(stream_key)
        cost = sum(map(len, payloads)) + _ENTRY_CHARGE * len(payloads)
        adding = cost + (_STREAM_CHARGE if stream is None else 0)
        held = self._bytes + self.also_held()
        if held + adding > self._max_bytes:
            raise BrokerFullError(
                f"memory broker holds {held} of {self._max_bytes} bytes; "
                f"this batch needs {adding} more"
            )
        if stream is None:
            next_id = self._next_ids.pop(stream_key, self._id_base + 1)
            stream = self._streams[stream_key] = _Stream(self._max_len, next_id)
            self._bytes += _STREAM_CHARGE
        first_id, freed = stream.extend(payloads, cost)
        self._bytes += cost - freed
        last = str(stream.next_id - 1) if payloads else None
        stream.touched = time.monotonic()
        now = time.time()
        charge = stream.stamp(first_id, now)
        stream.bytes += charge
        self._bytes += charge
        stream.meta.add(BatchFacts.of(payloads), now, last)
        self._notify()
        for watcher in self._watchers:
            watcher(stream_key)
        return last

    def watch(self, on_publish: Callable[[str], None]) -> bool:
        self._watchers.append(on_publish)
        return True

    def read_now(self, stream_key: str, from_id: str | None, max_count: int) -> list[BrokerEntry]:
        return self._slice(stream_key, int(from_id) if from_id is not None else 0, max_count)

    def _slice(self, key: str, after: int, max_count: int) -> list[BrokerEntry]:
        stream = self._get(key)
        return [] if stream is None else stream.after(after, max_count)

    async def read(
        self, stream_key: str, from_id: str | None, max_count: int = 256, block_ms: int = 1000
    ) -> list[BrokerEntry]:
        found = await self.read_many({stream_key: from_id}, max_count, block_ms)
        return found.get(stream_key, [])

    async def read_many(
        self, cursors: dict[str, str | None], max_count: int = 256, block_ms: int = 1000
    ) -> dict[str, list[BrokerEntry]]:
        def scan() -> dict[str, list[BrokerEntry]]:
            found: dict[str, list[BrokerEntry]] = {}
            for key, cursor in cursors.items():
                entries = self._slice(key, int(cursor) if cursor is not None else 0, max_count)
                if entries:
                    found[key] = entries
            return found

        found = scan()
        if found or block_ms <= 0:
            return found
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout=block_ms / 1000.0)
        except asyncio.TimeoutError:
            return {}
        return scan()

    async def latest_id(self, stream_key: str) -> str | None:
        stream = self._get(stream_key)
        return str(stream.entries[-1][0]) if stream is not None and stream.entries else None

    async def oldest_id(self, stream_key: str) -> str | None:
        stream = self._get(stream_key)
        return str(stream.entries[0][0]) if stream is not None and stream.entries else None

    def received_at(self, stream_key: str, entry_id: str) -> float | None:
        stream = self._streams.get(stream_key)
        if stream is None or not entry_id.isdigit():
            return None
        return stream.received_at(int(entry_id))

    async def run_summaries(self, stream_keys: list[str]) -> dict[str, RunMeta]:
        found: dict[str, RunMeta] = {}
        for key in stream_keys:
            stream = self._get(key)
            if stream is not None:
                found[key] = stream.meta
        return found

    async def close(self) -> None:
        self._streams.clear()
        self._bytes = 0
        self._notify()

    async def cursor_restarted(self, stream_key: str, cursor: str) -> bool:
        """The cursor is from an earlier server process (at or below this one's id base) or
        past every id the stream has had (its id memory was forgotten)."""
        value = int(cursor)
        if 0 < value <= self._id_base:
            return True
        stream = self._get(stream_key)
        if stream is not None:
            last = stream.next_id - 1
        else:
            last = self._next_ids.get(stream_key, self._id_base + 1) - 1
        return value > last

    def validate_cursor(self, cursor: str) -> None:
        if not _CURSOR.match(cursor):
            raise ValueError(f"cursor {shown_cursor(cursor)} is not a non-negative integer")

    def order_key(self, entry_id: str) -> tuple[int, int]:
        return (int(entry_id), 0)
