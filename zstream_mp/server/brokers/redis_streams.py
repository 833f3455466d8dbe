"""Redis Streams broker, byte-compatible with ZenML's `RedisStreamsBroker`.

Same key layout, field name `p`, `XADD MAXLEN ~ N` and an `EXPIRE` refreshed per publish,
so a ZenML server and this one can share a Redis and each other's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from zstream_mp.server.brokers.base import BrokerConnectionError, BrokerEntry, StreamBroker

_FIELD = b"p"
_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStreamsBroker(StreamBroker):
    """Streams in Redis (5+); every Redis failure surfaces as `BrokerConnectionError`."""

    def __init__(
        self,
        url: str,
        max_len: int = 10_000,
        ttl_seconds: int = 3600,
        connect_timeout: float = 2.0,
        socket_timeout: float = 5.0,
    ) -> None:
        if max_len < 1 or ttl_seconds < 1:
            raise ValueError("max_len and ttl_seconds must be >= 1")
        self._url = url
        self._max_len = max_len
        self._ttl = int(ttl_seconds)
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def _get_client(self) -> Any:
        if self._closed:
            raise BrokerConnectionError("Broker is closed.")
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    import redis.asyncio as aioredis

                    self._client = aioredis.Redis.from_url(
                        self._url,
                        socket_connect_timeout=self._connect_timeout,
                        socket_timeout=self._socket_timeout,
                        health_check_interval=30,
                        max_connections=200,
                    )
        return self._client

    async def publish(self, stream_key: str, payloads: list[bytes]) -> list[str]:
        if not payloads:
            return []
        client = await self._get_client()
        try:
            pipe = client.pipeline(transaction=False)
            for payload in payloads:
                pipe.xadd(stream_key, {_FIELD: payload}, maxlen=self._max_len, approximate=True)
            pipe.expire(stream_key, self._ttl)
            results = await pipe.execute()
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        return [_text(r) for r in results[:-1]]

    async def read(
        self, stream_key: str, from_id: str | None, max_count: int = 256, block_ms: int = 1000
    ) -> list[BrokerEntry]:
        client = await self._get_client()
        block = block_ms if block_ms > 0 else None
        try:
            response = await client.xread(
                {stream_key: from_id if from_id is not None else "0-0"},
                count=max_count,
                block=block,
            )
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        if not response:
            return []
        messages = response[0][1]
        return [BrokerEntry(_text(mid), bytes(fields.get(_FIELD, b""))) for mid, fields in messages]

    async def _edge_id(self, stream_key: str, newest: bool) -> str | None:
        client = await self._get_client()
        try:
            if newest:
                rows = await client.xrevrange(stream_key, "+", "-", count=1)
            else:
                rows = await client.xrange(stream_key, "-", "+", count=1)
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        return _text(rows[0][0]) if rows else None

    async def latest_id(self, stream_key: str) -> str | None:
        return await self._edge_id(stream_key, newest=True)

    async def oldest_id(self, stream_key: str) -> str | None:
        return await self._edge_id(stream_key, newest=False)

    async def delete_stream(self, stream_key: str) -> None:
        client = await self._get_client()
        try:
            await client.delete(stream_key)
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc

    async def close(self) -> None:
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    def validate_cursor(self, cursor: str) -> None:
        if not _CURSOR.match(cursor):
            raise ValueError(
                f"cursor {cursor!r} is not a valid Redis stream id (expected `<ms>-<seq>`)"
            )

    def order_key(self, entry_id: str) -> tuple[int, int]:
        ms, _, seq = entry_id.partition("-")
        return (int(ms), int(seq or 0))
