"""In-process broker: integer ids from 1 per stream, bounded length, TTL since last publish.

Good for one server process (development, tests, the demo). Unlike ZenML's in-memory broker
it also expires idle streams, so a long-lived dev server does not grow without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import deque

from zstream_mp.server.brokers.base import BrokerEntry, StreamBroker

_CURSOR = re.compile(r"^\d+$")


class _Stream:
    def __init__(self, max_len: int) -> None:
        self.entries: deque[tuple[int, bytes]] = deque(maxlen=max_len)
        self.next_id = 1
        self.touched = time.monotonic()
        self.changed = asyncio.Event()


class InMemoryBroker(StreamBroker):
    """Streams kept in this process; `max_len` entries each, dropped `ttl_seconds` after use."""

    def __init__(self, max_len: int = 10_000, ttl_seconds: float = 3600.0) -> None:
        if max_len < 1 or ttl_seconds <= 0:
            raise ValueError("max_len must be >= 1 and ttl_seconds > 0")
        self._max_len = max_len
        self._ttl = ttl_seconds
        self._streams: dict[str, _Stream] = {}
        # Next id per key survives expiry, so a live reader's cursor never points past a
        # recreated stream's ids.
        self._next_ids: dict[str, int] = {}
        self._last_sweep = time.monotonic()

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < min(self._ttl, 60.0):
            return
        self._last_sweep = now
        for key, stream in list(self._streams.items()):
            if now - stream.touched > self._ttl:
                self._next_ids[key] = stream.next_id
                del self._streams[key]
                stream.changed.set()

    def _create(self, key: str) -> _Stream:
        stream = self._streams[key] = _Stream(self._max_len)
        stream.next_id = self._next_ids.pop(key, 1)
        return stream

    def _get(self, key: str) -> _Stream | None:
        stream = self._streams.get(key)
        if stream is not None and time.monotonic() - stream.touched > self._ttl:
            self._next_ids[key] = stream.next_id
            del self._streams[key]
            stream.changed.set()
            return None
        return stream

    async def publish(self, stream_key: str, payloads: list[bytes]) -> list[str]:
        self._sweep()
        stream = self._get(stream_key)
        if stream is None:
            stream = self._create(stream_key)
        ids: list[str] = []
        for payload in payloads:
            stream.entries.append((stream.next_id, payload))
            ids.append(str(stream.next_id))
            stream.next_id += 1
        stream.touched = time.monotonic()
        event, stream.changed = stream.changed, asyncio.Event()
        event.set()
        return ids

    def _slice(self, stream: _Stream, after: int, max_count: int) -> list[BrokerEntry]:
        if not stream.entries:
            return []
        first = stream.entries[0][0]
        start = max(0, after - first + 1)
        return [
            BrokerEntry(str(i), p)
            for i, p in itertools.islice(stream.entries, start, start + max_count)
        ]

    async def read(
        self, stream_key: str, from_id: str | None, max_count: int = 256, block_ms: int = 1000
    ) -> list[BrokerEntry]:
        after = int(from_id) if from_id is not None else 0
        stream = self._get(stream_key)
        if stream is None:
            stream = self._create(stream_key)
        found = self._slice(stream, after, max_count)
        if found or block_ms <= 0:
            return found
        changed = stream.changed
        try:
            await asyncio.wait_for(changed.wait(), timeout=block_ms / 1000.0)
        except asyncio.TimeoutError:
            return []
        current = self._streams.get(stream_key)
        return self._slice(current, after, max_count) if current is not None else []

    async def latest_id(self, stream_key: str) -> str | None:
        stream = self._get(stream_key)
        return str(stream.entries[-1][0]) if stream is not None and stream.entries else None

    async def oldest_id(self, stream_key: str) -> str | None:
        stream = self._get(stream_key)
        return str(stream.entries[0][0]) if stream is not None and stream.entries else None

    async def delete_stream(self, stream_key: str) -> None:
        stream = self._streams.pop(stream_key, None)
        if stream is not None:
            stream.changed.set()

    async def close(self) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.changed.set()

    def validate_cursor(self, cursor: str) -> None:
        if not _CURSOR.match(cursor):
            raise ValueError(f"cursor {cursor!r} is not a non-negative integer")

    def order_key(self, entry_id: str) -> tuple[int, int]:
        return (int(entry_id), 0)
