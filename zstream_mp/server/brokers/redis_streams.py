"""Redis Streams broker, byte-compatible with ZenML's `RedisStreamsBroker`.

Same key layout, field name `p`, `XADD MAXLEN ~ N` and an `EXPIRE` refreshed per publish,
so a ZenML server and this one can share a Redis and each other's streams.

Connections come from three separate places, so readers can never starve ingest:

* writes (publish, idempotency records): their own pool of `write_connections`;
* short reads (a subscriber's catch-up, the newest/oldest id): a pool of `read_connections`
  whose callers wait for a free connection instead of failing;
* the one blocking `XREAD` of all subscribed streams (`read_many`, used by the server-wide
  reader): one dedicated connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from zstream_mp.errors import BrokerConnectionError
from zstream_mp.server.brokers.base import BrokerEntry, StreamBroker, shown_cursor
from zstream_mp.server.brokers.run_meta import MAX_PIDS, MAX_STEPS, BatchFacts, RunMeta

_FIELD = b"p"
_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")
_POOL_WAIT_S = 5.0
_SUMMARY_CHUNK = 100
"""Runs summarised per pipeline: a big page is several short round trips, not one long one."""
_INDEX_MAX = 100_000
"""Runs the shared run index holds (newest kept); older ones leave the list, not Redis."""


def meta_key(stream_key: str) -> str:
    """The hash holding a run's summary, beside (not inside) ZenML's key layout."""
    return "zstream:meta:" + stream_key


def index_key(prefix: str) -> str:
    """The sorted set of a deployment's runs, scored by their first event's time."""
    return "zstream:runs:" + prefix


def split_key(stream_key: str) -> tuple[str, str]:
    """`(prefix, run id)` of `...:run:<id>`."""
    prefix, _, run_id = stream_key.rpartition(":run:")
    return prefix, run_id


def _summary_of(stream_key: str, facts: BatchFacts) -> tuple[tuple[str, str], list[str]]:
    """The summary hash and run index of `stream_key`, and the summary fields `facts` sets
    once (`s:<step>`, `p:<pid>`): what the Lua summary takes."""
    prefix, _ = split_key(stream_key)
    fields = [f"s:{step}" for step in facts.steps] + [f"p:{pid}" for pid in facts.pids]
    return (meta_key(stream_key), index_key(prefix)), fields


def _meta_of(fields: dict[Any, Any], last_id: str | None) -> RunMeta:
    meta = RunMeta(last_id=last_id)
    for raw_name, raw_value in fields.items():
        name, value = _text(raw_name), _text(raw_value)
        if name == "first":
            meta.first = float(value)
        elif name == "last":
            meta.last = float(value)
        elif name == "events":
            meta.events = int(value)
        elif name == "ended":
            meta.ended = True
        elif name == "last_id":
            meta.last_id = value
        elif name.startswith("s:") and len(meta.steps) < MAX_STEPS:
            meta.steps.add(name[2:])
        elif name.startswith("p:") and len(meta.pids) < MAX_PIDS and name[2:].isdigit():
            meta.pids.add(int(name[2:]))
    return meta


_SUMMARISE = """
local function summarise(meta, index, ttl, now, events, ended, run_id, last, fields, to)
  if last then
    redis.call('HSET', meta, 'last_id', last)
  else
    redis.call('HDEL', meta, 'last_id')
  end
  if events ~= '0' then
    redis.call('HSETNX', meta, 'first', now)
    redis.call('HSET', meta, 'last', now)
    redis.call('HINCRBY', meta, 'events', events)
    redis.call('ZADD', index, 'NX', now, run_id)
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now - ttl)
    redis.call('ZREMRANGEBYRANK', index, 0, -INDEX_MAX - 1)
  end
  for i = fields, to do
    redis.call('HSETNX', meta, ARGV[i], 1)
  end
  if ended == '1' then
    redis.call('HSET', meta, 'ended', 1)
  end
  redis.call('EXPIRE', meta, ttl)
end
""".replace("INDEX_MAX", str(_INDEX_MAX))
"""A batch's run summary (in the hash beside the stream) and the run index: `last_id`
(kept only when given; without it the list reads the stream's newest id), the times and
counts, the run's place in the index (trimmed by age and to `_INDEX_MAX` runs), the
summary fields set once (`s:<step>`, `p:<pid>`: `ARGV[fields..to]`) and the end."""

_SUMMARY = (
    _SUMMARISE
    + """
summarise(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 7, #ARGV)
"""
)
"""The summary alone. KEYS: the summary hash, the run index. ARGV: TTL, now, events, ended
(`1`/`0`), run id, the last id, then the summary fields."""

_PUBLISH = (
    _SUMMARISE
    + """
local fields = tonumber(ARGV[7])
local last
for i = 8 + fields, #ARGV do
  last = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'p', ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local kept = nil
if ARGV[5] == '1' then kept = last end
summarise(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], kept, 8, 7 + fields)
return last
"""
)
"""Append a batch and update its run's summary in one command, answering the last id.

KEYS: the stream, its summary hash, the run index. ARGV: max length, TTL, now, events,
ended (`1`/`0`), run id, the count of summary fields, those fields, then the payloads. The
last id is kept in the summary only for a run's end. One command instead of one per event
and per summary field packed and parsed in this process."""

_PUBLISH_FENCED = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
local last
for i = 6, #ARGV do
  last = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'p', ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], '{"fp":"' .. ARGV[4] .. '","result":{"count":' .. (#ARGV - 5)
  .. ',"last_id":"' .. last .. '"}}', 'PX', ARGV[5])
return last
"""
"""Append a batch and record its answer in one atomic step, only while `KEYS[2]` still
holds this attempt's claim (`ARGV[1]`): a replica killed mid-publish leaves both or
neither, and an attempt whose claim expired (another replica took over) appends nothing."""


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
        write_connections: int = 64,
        read_connections: int = 32,
    ) -> None:
        if max_len < 1 or ttl_seconds < 1:
            raise ValueError("max_len and ttl_seconds must be >= 1")
        self._url = url
        self._max_len = max_len
        self._ttl = int(ttl_seconds)
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        # "list": the run list's own few connections, so listers never starve short reads
        # (the readiness probe, subscribers' catch-up)
        self._sizes = {
            "write": write_connections,
            "read": read_connections,
            "tail": 1,
            "list": 4,
        }
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStreamsBroker(max_len={self._max_len}, ttl_seconds={self._ttl})"

    async def _client(self, role: str) -> Any:
        if self._closed:
            raise BrokerConnectionError("Broker is closed.")
        client = self._clients.get(role)
        if client is None:
            async with self._lock:
                client = self._clients.get(role)
                if client is None:
                    import redis.asyncio as aioredis

                    pool = aioredis.BlockingConnectionPool.from_url(
                        self._url,
                        max_connections=self._sizes[role],
                        timeout=_POOL_WAIT_S,
                        socket_connect_timeout=self._connect_timeout,
                        socket_timeout=self._socket_timeout,
                        health_check_interval=30,
                    )
                    client = self._clients[role] = aioredis.Redis(connection_pool=pool)
        return client

    async def writer(self) -> Any:
        """The client of the write pool (for idempotency records beside the streams)."""
        return await self._client("write")

    async def publish(self, stream_key: str, payloads: list[bytes]) -> str | None:
        if not payloads:
            return None
        client = await self._client("write")
        facts = BatchFacts.of(payloads)
        keys, fields = _summary_of(stream_key, facts)
        try:
            last = await client.eval(
                _PUBLISH,
                3,
                stream_key,
                *keys,
                self._max_len,
                self._ttl,
                repr(time.time()),
                facts.events,
                1 if facts.ended else 0,
                split_key(stream_key)[1],
                len(fields),
                *fields,
                *payloads,
            )
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        return _text(last)

    async def publish_fenced(
        self,
        stream_key: str,
        payloads: list[bytes],
        record_key: str,
        claim: str,
        fp: str,
        record_ttl_ms: int,
    ) -> str | None:
        """`publish` plus the idempotency record `{"fp", "result"}` under `record_key`, in
        one Lua script, if `record_key` still holds `claim`; the last id, or None (claim lost).
        """
        if not payloads:
            return None
        client = await self._client("write")
        try:
            last = await client.eval(
                _PUBLISH_FENCED,
                2,
                stream_key,
                record_key,
                claim,
                self._max_len,
                self._ttl,
                fp,
                record_ttl_ms,
                *payloads,
            )
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        if last is None:
            return None
        with contextlib.suppress(Exception):  # the batch is in: a lost summary is not an error
            facts = BatchFacts.of(payloads)
            keys, fields = _summary_of(stream_key, facts)
            await client.eval(
                _SUMMARY,
                2,
                *keys,
                self._ttl,
                repr(time.time()),
                facts.events,
                1 if facts.ended else 0,
                split_key(stream_key)[1],
                _text(last),
                *fields,
            )
        return _text(last)

    async def _xread(
        self, role: str, cursors: dict[str, str | None], max_count: int, block_ms: int
    ) -> dict[str, list[BrokerEntry]]:
        client = await self._client(role)
        block = block_ms if block_ms > 0 else None
        try:
            response = await client.xread(
                {k: c if c is not None else "0-0" for k, c in cursors.items()},
                count=max_count,
                block=block,
            )
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        found: dict[str, list[BrokerEntry]] = {}
        for key, messages in response or ():
            entries = [
                BrokerEntry(_text(mid), bytes(fields.get(_FIELD, b""))) for mid, fields in messages
            ]
            if entries:
                found[_text(key)] = entries
        return found

    async def read(
        self, stream_key: str, from_id: str | None, max_count: int = 256, block_ms: int = 1000
    ) -> list[BrokerEntry]:
        role = "tail" if block_ms > 0 else "read"
        found = await self._xread(role, {stream_key: from_id}, max_count, block_ms)
        return found.get(stream_key, [])

    async def read_many(
        self, cursors: dict[str, str | None], max_count: int = 256, block_ms: int = 1000
    ) -> dict[str, list[BrokerEntry]]:
        if not cursors:
            return {}
        return await self._xread("tail" if block_ms > 0 else "read", cursors, max_count, block_ms)

    async def _edge_id(self, stream_key: str, newest: bool) -> str | None:
        client = await self._client("read")
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

    def received_at(self, stream_key: str, entry_id: str) -> float | None:
        ms, _, _ = entry_id.partition("-")
        return int(ms) / 1000.0 if ms.isdigit() else None

    async def run_summaries(self, stream_keys: list[str]) -> dict[str, RunMeta]:
        client = await self._client("list")
        found: dict[str, RunMeta] = {}
        try:
            for start in range(0, len(stream_keys), _SUMMARY_CHUNK):
                keys = stream_keys[start : start + _SUMMARY_CHUNK]
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hgetall(meta_key(key))
                for key, fields in zip(keys, await pipe.execute(), strict=True):
                    if fields:
                        found[key] = _meta_of(fields, None)
            # runs last written without a known id (a client without Idempotency-Key)
            unknown = [k for k in stream_keys if k not in found or found[k].last_id is None]
            if unknown:
                pipe = client.pipeline(transaction=False)
                for key in unknown:
                    pipe.xrevrange(key, "+", "-", count=1)
                for key, newest in zip(unknown, await pipe.execute(), strict=True):
                    if newest:
                        found.setdefault(key, RunMeta()).last_id = _text(newest[0][0])
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        return found

    async def indexed_runs(
        self, prefix: str, newest_first: bool, cursor: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]] | None:
        client = await self._client("list")
        index = index_key(prefix)
        spare = limit + 64  # entries sharing the cursor's score are skipped below
        try:
            if newest_first:
                top = repr(cursor[0]) if cursor else "+inf"
                rows = await client.zrevrangebyscore(
                    index, top, "-inf", start=0, num=spare, withscores=True
                )
            else:
                bottom = repr(cursor[0]) if cursor else "-inf"
                rows = await client.zrangebyscore(
                    index, bottom, "+inf", start=0, num=spare, withscores=True
                )
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc
        found = [(float(score), _text(member)) for member, score in rows]
        if cursor is not None:
            if newest_first:
                found = [row for row in found if row < cursor]
            else:
                found = [row for row in found if row > cursor]
        found.sort(reverse=newest_first)
        return found[:limit]

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.aclose(close_connection_pool=True)

    def validate_cursor(self, cursor: str) -> None:
        if not _CURSOR.match(cursor):
            raise ValueError(
                f"cursor {shown_cursor(cursor)} is not a valid Redis stream id "
                "(expected `<ms>-<seq>`)"
            )

    def order_key(self, entry_id: str) -> tuple[int, int]:
        ms, _, seq = entry_id.partition("-")
        return (int(ms), int(seq or 0))
