"""Replay protection for POSTed batches keyed by `Idempotency-Key` (not in ZenML).

The publisher sends one key per batch and reuses it on every retry. If the server stored a
batch but the response was lost, the retry gets the stored answer instead of appending the
events again. As the IETF `Idempotency-Key` draft asks:

* a record is scoped to the caller (a digest of its bearer token) and the run, so two
  tokens using the same key never see each other's answers;
* it holds a fingerprint of the batch (a digest of its encoded frames): the same key with
  a different batch is refused (`Mismatch`, answered 422), never answered with the stored
  result;
* a retry that arrives while the first attempt is still publishing waits for it.

Two stores. `MemoryIdempotency` (memory broker) keeps at most `max_keys` records for
`ttl` seconds in this process. `RedisIdempotency` (Redis broker) keeps them in Redis beside
the streams (`SET NX` with a TTL, keys under `zstream:idem:<deployment id>:`), so a retry
that lands on another replica is not appended twice. There the batch and its record are
written by one Lua script (`RedisStreamsBroker.publish_fenced`), so a replica killed
mid-publish leaves both or neither: a retry on another replica finds the stored answer,
never a half-done attempt to repeat. An in-flight claim is a lease of `PENDING_LEASE`
seconds holding a random token; when its replica dies, a retry waits for the lease to run
out and takes over, and an attempt that outlived its lease appends nothing (its script
checks the token first), so the takeover cannot duplicate either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zstream_mp.errors import BrokerConnectionError

Result = dict[str, Any]

PENDING_TTL = 30.0
"""The longest a retry waits for an in-flight attempt with its key before answering 409."""
PENDING_LEASE = 5.0
"""Seconds an in-flight claim holds its key in Redis; a dead replica's claim ends this soon."""
_POLL_S = 0.05
RECORD_CHARGE = 1024
"""Bytes one in-memory record costs: scope, key (up to 255 characters), fingerprint,
result and their slots."""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"
"""Delete a claim only while it is still this attempt's (another replica may hold it now)."""


@dataclass(frozen=True)
class Replay:
    """The key was used for the same batch: answer with the stored result."""

    result: Result


@dataclass(frozen=True)
class Mismatch:
    """The key was used for a different batch."""


@dataclass(frozen=True)
class Busy:
    """The first attempt with this key is still in flight after `PENDING_TTL`."""


@dataclass(frozen=True)
class Fence:
    """A Redis claim: publish with `publish_fenced(..., record_key, claim, fp, ttl_ms)`."""

    record_key: str
    claim: str
    fp: str
    ttl_ms: int


@dataclass(frozen=True)
class Claimed:
    """This attempt owns the key: publish, then call `finish` (with a `fence`: publish
    through it, which records the answer itself)."""

    fence: Fence | None = None


Outcome = Replay | Mismatch | Busy | Claimed


def caller_scope(token: str | None, run: str) -> str:
    """Who the key belongs to: a digest of the token (never the token) and the run."""
    digest = hashlib.sha256((token or "").encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{digest}:{run}"


def fingerprint(payloads: Iterable[bytes]) -> str:
    """A digest of the batch as it would be stored, so equal batches match however sent."""
    h = hashlib.sha256()
    for payload in payloads:
        h.update(len(payload).to_bytes(8, "big"))
        h.update(payload)
    return h.hexdigest()


class IdempotencyStore(ABC):
    """Claim a key before publishing; finish it with the result (or None on failure)."""

    @abstractmethod
    async def claim(self, scope: str, key: str, fp: str) -> Outcome: ...

    @abstractmethod
    async def finish(self, scope: str, key: str, fp: str, result: Result | None) -> None: ...

    async def release(self, fence: Fence) -> None:
        """Give up a fenced claim whose publish failed, so a retry need not wait its lease."""
        return None


class MemoryIdempotency(IdempotencyStore):
    """Records in this process: at most `max_keys`, each for `ttl` seconds, oldest first out."""

    def __init__(self, max_keys: int = 100_000, ttl: float = 3600.0) -> None:
        self._max_keys = max_keys
        self._ttl = ttl
        self._done: OrderedDict[tuple[str, str], tuple[str, Result, float]] = OrderedDict()
        self._pending: dict[tuple[str, str], tuple[str, asyncio.Future[Result | None]]] = {}

    def __len__(self) -> int:
        return len(self._done) + len(self._pending)

    def approx_bytes(self) -> int:
        """Memory held, estimated per record (counted against the memory broker's cap)."""
        return RECORD_CHARGE * len(self)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._done:
            first = next(iter(self._done.values()))
            if len(self._done) <= self._max_keys and now - first[2] <= self._ttl:
                return
            self._done.popitem(last=False)

    async def claim(self, scope: str, key: str, fp: str) -> Outcome:
        slot = (scope, key)
        while True:
            self._expire()
            stored = self._done.get(slot)
            if stored is not None:
                return Replay(stored[1]) if stored[0] == fp else Mismatch()
            pending = self._pending.get(slot)
            if pending is None:
                self._pending[slot] = (fp, asyncio.get_running_loop().create_future())
                return Claimed()
            if pending[0] != fp:
                return Mismatch()
            try:
                await asyncio.wait_for(asyncio.shield(pending[1]), PENDING_TTL)
            except asyncio.TimeoutError:
                return Busy()

    async def finish(self, scope: str, key: str, fp: str, result: Result | None) -> None:
        slot = (scope, key)
        pending = self._pending.pop(slot, None)
        if result is not None:
            self._done[slot] = (fp, result, time.monotonic())
            self._done.move_to_end(slot)
            self._expire()
        if pending is not None and not pending[1].done():
            pending[1].set_result(result)


class RedisIdempotency(IdempotencyStore):
    """Records in Redis, shared by every replica using the same Redis and deployment id."""

    def __init__(self, client: Any, deployment_id: str, ttl: float = 3600.0) -> None:
        self._client = client
        self._prefix = f"zstream:idem:{deployment_id}:"
        self._ttl_ms = max(1, int(ttl * 1000))
        self._lease_ms = int(PENDING_LEASE * 1000)

    def _key(self, scope: str, key: str) -> str:
        digest = hashlib.sha256(f"{scope}\0{key}".encode("utf-8", "surrogateescape"))
        return self._prefix + digest.hexdigest()

    async def claim(self, scope: str, key: str, fp: str) -> Outcome:
        name = self._key(scope, key)
        pending = json.dumps({"fp": fp, "result": None, "claim": secrets.token_hex(16)})
        deadline = time.monotonic() + PENDING_TTL
        try:
            while True:
                if await self._client.set(name, pending, nx=True, px=self._lease_ms):
                    return Claimed(Fence(name, pending, fp, self._ttl_ms))
                raw = await self._client.get(name)
                if raw is None:  # expired or finished with a failure meanwhile: claim again
                    continue
                record = json.loads(raw)
                if record.get("fp") != fp:
                    return Mismatch()
                if record.get("result") is not None:
                    return Replay(record["result"])
                if time.monotonic() > deadline:
                    return Busy()
                await asyncio.sleep(_POLL_S)
        except (ValueError, TypeError) as exc:  # a record this version cannot read
            raise BrokerConnectionError(f"bad idempotency record: {exc}") from exc
        except BrokerConnectionError:
            raise
        except Exception as exc:
            raise BrokerConnectionError(str(exc)) from exc

    async def finish(self, scope: str, key: str, fp: str, result: Result | None) -> None:
        name = self._key(scope, key)
        try:
            if result is None:
                await self._client.delete(name)
            else:
                record = json.dumps({"fp": fp, "result": result})
                await self._client.set(name, record, px=self._ttl_ms)
        except Exception:  # the batch is stored; a lost record only risks a duplicate
            logging.getLogger("zstream_mp.server").warning(
                "could not store the idempotency record for a published batch"
            )

    async def release(self, fence: Fence) -> None:
        with contextlib.suppress(Exception):  # else the lease runs out by itself
            await self._client.eval(_RELEASE, 1, fence.record_key, fence.claim)
