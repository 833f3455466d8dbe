"""The broker interface, shaped like ZenML's `StreamBroker` so either can back the server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

from zstream_mp.server.brokers.run_meta import RunMeta


class BrokerEntry(NamedTuple):
    """One stored frame: its broker id and the frame bytes."""

    id: str
    payload: bytes


def shown_cursor(cursor: str) -> str:
    """A cursor as ZenML's message quotes it (`repr`), cut short when it is long."""
    return repr(cursor) if len(cursor) <= 64 else repr(cursor[:64]) + "…"


class StreamBroker(ABC):
    """Append-only per-run streams with broker-assigned, ordered ids."""

    @abstractmethod
    async def publish(self, stream_key: str, payloads: list[bytes]) -> str | None:
        """Append payloads in order; returns the last one's id (None when there are none)."""

    @abstractmethod
    async def read(
        self, stream_key: str, from_id: str | None, max_count: int = 256, block_ms: int = 1000
    ) -> list[BrokerEntry]:
        """Entries strictly after `from_id` (None: from the start); `block_ms=0` never waits."""

    @abstractmethod
    async def read_many(
        self, cursors: dict[str, str | None], max_count: int = 256, block_ms: int = 1000
    ) -> dict[str, list[BrokerEntry]]:
        """Entries after each key's cursor, for many streams in one call (keys with none are
        left out); blocks up to `block_ms` until any of them has one. One server-wide reader
        uses it, so subscribed runs share one broker connection instead of holding one each."""

    @abstractmethod
    async def latest_id(self, stream_key: str) -> str | None:
        """Id of the newest retained entry, or None for an empty or unknown stream."""

    @abstractmethod
    async def oldest_id(self, stream_key: str) -> str | None:
        """Id of the oldest retained entry, so a lagging reader can tell whether it lost any."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and wake waiting readers."""

    @abstractmethod
    def validate_cursor(self, cursor: str) -> None:
        """Raise `ValueError` (ZenML's message) for a malformed client cursor."""

    @abstractmethod
    def order_key(self, entry_id: str) -> tuple[int, int]:
        """Sort key of a valid id, so ids from this broker can be compared."""

    def watch(self, on_publish: Callable[[str], None]) -> bool:
        """Have `on_publish(stream_key)` called synchronously after every publish, where
        this process sees every publish (the memory broker); False when readers must poll
        (`read_many`) instead."""
        return False

    def read_now(self, stream_key: str, from_id: str | None, max_count: int) -> list[BrokerEntry]:
        """Entries after `from_id` without waiting or suspending (brokers that `watch`)."""
        raise NotImplementedError

    async def publish_fenced(
        self,
        stream_key: str,
        payloads: list[bytes],
        record_key: str,
        claim: str,
        fp: str,
        record_ttl_ms: int,
    ) -> str | None:
        """Append and store the idempotency record atomically while `record_key` holds
        `claim`; the last id, or None when the claim was lost. Brokers whose idempotency
        records live beside their streams (Redis) implement it."""
        raise NotImplementedError(f"{type(self).__name__} keeps no idempotency records")

    async def cursor_restarted(self, stream_key: str, cursor: str) -> bool:
        """A valid cursor this stream's ids cannot continue from: given out before the ids
        restarted (the memory broker's previous process). Its subscriber gets
        `gap: restart` and the stream from its start. Redis ids come from the clock and
        outlive server restarts, so they never restart under a client's cursor."""
        return False

    def received_at(self, stream_key: str, entry_id: str) -> float | None:
        """When the server appended this entry (epoch seconds), if the broker knows; the
        live page shows it. ZenML's wire carries no time, so it is never put in a frame."""
        return None

    async def run_summaries(self, stream_keys: list[str]) -> dict[str, RunMeta]:
        """Each run's summary kept at ingest, in as few broker calls as the broker can
        (the run list asks for one page at a time). This default knows only the newest id."""
        found: dict[str, RunMeta] = {}
        for key in stream_keys:
            latest = await self.latest_id(key)
            if latest is not None:
                found[key] = RunMeta(last_id=latest)
        return found

    async def indexed_runs(
        self, prefix: str, newest_first: bool, cursor: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]] | None:
        """Runs whose streams start with `prefix`, as (first event time, run id) in order,
        strictly past `cursor`; None when the broker keeps no index (the server's own
        registry lists the runs). A shared broker (Redis) keeps one across processes."""
        return None

    async def ping(self) -> None:
        """Startup probe; raises `BrokerConnectionError` when unreachable."""
        await self.latest_id("zstream:startup-probe")
