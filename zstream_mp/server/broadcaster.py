"""Fan-out: one broker reader per server process, any number of subscribers, nothing lost to races.

The reader reads every subscribed run's stream in one blocking call (`read_many`), so
subscribed runs share one broker connection instead of holding one each, and hands each
entry to that run's session, which offers it to its subscribers. A broker that sees every
publish itself (the memory broker: `watch`) needs no reader: it calls the broadcaster within
the publish, which hands the new entries to the session at once, and the publish handler
lets the woken subscribers write their frames before its own answer goes out
(`let_subscribers_write`), so a frame reaches a subscriber without a hop through a reader
task and without waiting behind the publisher's response.

Each subscriber registers its queue *before* it replays history from the broker, then
switches to the live queue and skips ids it already delivered (ids are ordered, so the
check is a comparison, not an LRU). A subscriber that falls more than `queue_size` entries
behind never blocks the reader: its queue is cleared and it re-reads the missed entries
from the broker itself. Only when the broker no longer holds them (trimmed by retention)
does it see `gap: overflow`, so a slow reader loses nothing the broker still has.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass

from zstream_mp.errors import ShuttingDownError, StreamCapacityError
from zstream_mp.server.brokers import BrokerEntry, StreamBroker
from zstream_mp.server.models import DecodedFrame, EndFrame, EventFrame, decode_frame, event_json

logger = logging.getLogger("zstream_mp.server")

_READ_COUNT = 256
_READER_BLOCK_MS = 250
"""The reader re-reads the set of subscribed streams at least this often."""
_GAP_RATE_LIMIT_S = 5.0
_BACKOFF_MIN_S = 0.25
_BACKOFF_MAX_S = 5.0
_INITIAL_CURSOR_ATTEMPTS = 5


@dataclass(frozen=True)
class SubscriberEntry:
    """A broker entry decoded once: the frame and, for events, the SSE `data:` JSON."""

    id: str
    frame: DecodedFrame
    data: str | None

    @classmethod
    def decode(cls, raw: BrokerEntry) -> SubscriberEntry:
        frame = decode_frame(raw.payload)
        data = event_json(frame.event) if isinstance(frame, EventFrame) else None
        return cls(raw.id, frame, data)

    @property
    def is_end(self) -> bool:
        return isinstance(self.frame, EndFrame)


@dataclass(frozen=True)
class SubscriberGap:
    """Loss marker with ZenML's reasons: `overflow`, `outage`, `shutdown`."""

    reason: str


@dataclass(frozen=True)
class SubscriberEnd:
    """Terminal marker not backed by a broker entry (server shutdown)."""


SubscriberItem = SubscriberEntry | SubscriberGap | SubscriberEnd


class Subscriber:
    """One SSE client: replay from its cursor, then live entries, each exactly once."""

    def __init__(
        self, session: Session, from_id: str | None, queue_size: int, lost: str | None = None
    ) -> None:
        self._session = session
        self._broker = session.broker
        self.last_id = from_id
        self._queue: deque[SubscriberEntry] = deque()
        self._queue_size = queue_size
        self._ready: deque[SubscriberItem] = deque([SubscriberGap(lost)] if lost else [])
        self._wake = asyncio.Event()
        self._catching_up = True
        self._overflow_from: str | None = None
        self._outage_pending = False
        self._shutdown = False
        self._finished = False
        self._last_gap = float("-inf")
        self._backoff = _BACKOFF_MIN_S

    # -- called by the session's reader (synchronously, never blocks) -----------------
    def offer(self, entry: SubscriberEntry) -> None:
        if len(self._queue) >= self._queue_size:
            if self._overflow_from is None:
                self._overflow_from = self._queue[0].id
            self._queue.clear()
        self._queue.append(entry)
        self._wake.set()

    def note_outage(self) -> None:
        self._outage_pending = True
        self._wake.set()

    def shut_down(self) -> None:
        self._shutdown = True
        self._wake.set()

    # -- called by the SSE writer --------------------------------------------------------
    def _newer(self, entry_id: str) -> bool:
        if self.last_id is None:
            return True
        order = self._broker.order_key
        return order(entry_id) > order(self.last_id)

    def _accept(self, entry: SubscriberEntry) -> None:
        self.last_id = entry.id
        self._ready.append(entry)
        if entry.is_end:
            self._finished = True

    async def _catch_up(self) -> None:
        key = self._session.key
        if self._overflow_from is not None:
            lost_from, self._overflow_from = self._overflow_from, None
            self._queue.clear()
            oldest = await self._broker.oldest_id(key)
            order = self._broker.order_key
            if oldest is None or order(oldest) > order(lost_from):
                self._ready.append(SubscriberGap("overflow"))
        raws = await self._broker.read(key, self.last_id, _READ_COUNT, block_ms=0)
        for raw in raws:
            if self._newer(raw.id):
                self._accept(SubscriberEntry.decode(raw))
                if self._finished:
                    return
        if len(raws) < _READ_COUNT:
            self._catching_up = False

    async def next(self, timeout: float) -> SubscriberItem | None:
        """The next item to send, or None after `timeout` seconds without one (heartbeat)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._finished:
                return SubscriberEnd()
            if self._shutdown:
                self._finished = True
                self._ready.extend((SubscriberGap("shutdown"), SubscriberEnd()))
                continue
            if self._outage_pending:
                self._outage_pending = False
                if self._gap_allowed(loop.time()):
                    self._ready.append(SubscriberGap("outage"))
                continue
            if self._catching_up or self._overflow_from is not None:
                self._catching_up = True
                try:
                    await self._catch_up()
                    self._backoff = _BACKOFF_MIN_S
                except Exception as exc:  # broker down: tell the client, retry from cursor
                    logger.debug("catch-up read failed for %s: %s", self._session.key, exc)
                    if self._gap_allowed(loop.time()):
                        self._ready.append(SubscriberGap("outage"))
                    await self._sleep(random.uniform(_BACKOFF_MIN_S / 2, self._backoff))
                    self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
                continue
            if self._queue:
                entry = self._queue.popleft()
                if self._newer(entry.id):
                    self._accept(entry)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._wake.clear()
            handle = loop.call_later(remaining, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                handle.cancel()

    def _gap_allowed(self, now: float) -> bool:
        if now - self._last_gap < _GAP_RATE_LIMIT_S:
            return False
        self._last_gap = now
        return True

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake early for shutdown."""
        self._wake.clear()
        loop = asyncio.get_running_loop()
        handle = loop.call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()

    def close(self) -> None:
        self._session.remove(self)


class Session:
    """All subscribers of one stream key on this server, fed by the broadcaster's reader."""

    def __init__(self, broadcaster: Broadcaster, key: str, cursor: str | None) -> None:
        self.broadcaster = broadcaster
        self.broker = broadcaster.broker
        self.key = key
        self.cursor = cursor
        self.subscribers: list[Subscriber] = []
        self.ended = False
        self._idle: asyncio.TimerHandle | None = None

    def add(self, sub: Subscriber) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.subscribers.append(sub)
        self.broadcaster.subscribers_total += 1
        self.broadcaster.wake_reader()

    def remove(self, sub: Subscriber) -> None:
        try:
            self.subscribers.remove(sub)
        except ValueError:
            return
        self.broadcaster.subscribers_total -= 1
        self.forget_when_idle()

    def forget_when_idle(self) -> None:
        """Without subscribers, the session is forgotten after the idle grace."""
        if not self.subscribers and self._idle is None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.broadcaster.idle_grace, self.stop)

    def stop(self) -> None:
        self._idle = None
        if self.subscribers:
            return
        self.broadcaster.forget(self)

    def deliver(self, raws: list[BrokerEntry]) -> None:
        """Offer entries the reader fetched to every subscriber (never blocks)."""
        for raw in raws:
            entry = SubscriberEntry.decode(raw)
            self.cursor = entry.id
            for sub in self.subscribers:
                sub.offer(entry)
            if entry.is_end:
                self.ended = True
                return

    def note_outage(self) -> None:
        for sub in self.subscribers:
            sub.note_outage()

    def shut_down(self) -> None:
        for sub in self.subscribers:
            sub.shut_down()


class Broadcaster:
    """Sessions by stream key; hands out subscribers and shuts them all down on exit."""

    def __init__(
        self,
        broker: StreamBroker,
        *,
        max_subscribers: int = 100,
        max_total: int = 10_000,
        queue_size: int = 1024,
        idle_grace: float = 5.0,
    ) -> None:
        self.broker = broker
        self.max_subscribers = max_subscribers
        self.max_total = max_total
        self.subscribers_total = 0
        self.queue_size = queue_size
        self.idle_grace = idle_grace
        self._sessions: dict[str, Session] = {}
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._work = asyncio.Event()
        self._pushed = broker.watch(self._on_publish)
        """The broker calls `_on_publish` itself: no reader task is needed."""

    def _on_publish(self, key: str) -> None:
        """Within a publish to a watching broker: hand the new entries to the run's session."""
        session = self._sessions.get(key)
        if session is None or self._closing:
            return
        try:
            while not session.ended:
                raws = self.broker.read_now(key, session.cursor, _READ_COUNT)
                if raws:
                    session.deliver(raws)
                if len(raws) < _READ_COUNT:
                    return
        except Exception:  # a subscriber's trouble must never fail the publish
            logger.warning("handing entries of %s to its subscribers failed", key, exc_info=True)

    async def let_subscribers_write(self, key: str) -> None:
        """After a publish to `key`: one turn of the loop, in which the subscribers the publish
        woke write their frames (before the caller writes its answer); none without any."""
        if self._pushed:
            session = self._sessions.get(key)
            if session is not None and session.subscribers:
                await asyncio.sleep(0)

    def wake_reader(self) -> None:
        """Start the reader if needed and let it pick up a new session."""
        if self._pushed:
            return
        self._work.set()
        if self._reader is None and not self._closing:
            self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        backoff = _BACKOFF_MIN_S
        last_gap = float("-inf")
        loop = asyncio.get_running_loop()
        while not self._closing:
            cursors = {k: s.cursor for k, s in self._sessions.items() if not s.ended}
            if not cursors:
                self._work.clear()
                await self._work.wait()
                continue
            try:
                found = await self.broker.read_many(cursors, _READ_COUNT, _READER_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("broker read failed for %d stream(s): %s", len(cursors), exc)
                if loop.time() - last_gap >= _GAP_RATE_LIMIT_S:
                    last_gap = loop.time()
                    for key in cursors:
                        session = self._sessions.get(key)
                        if session is not None:
                            session.note_outage()
                await asyncio.sleep(random.uniform(_BACKOFF_MIN_S / 2, backoff))
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_MIN_S
            for key, raws in found.items():
                session = self._sessions.get(key)
                # a session forgotten and recreated meanwhile starts from its own cursor
                if session is not None and session.cursor == cursors[key]:
                    session.deliver(raws)

    async def subscribe(self, key: str, from_id: str | None, lost: str | None = None) -> Subscriber:
        """Register a subscriber; raises on shutdown, the per-run cap or a broker outage.

        `lost`: a gap reason the subscriber is told first (its cursor could not be honoured).
        """
        if self._closing:
            raise ShuttingDownError()
        if self.subscribers_total >= self.max_total:
            raise StreamCapacityError("per-server", self.max_total)
        session = self._sessions.get(key)
        if session is None:
            cursor = await self._initial_cursor(key)
            if self._closing:
                raise ShuttingDownError()
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = Session(self, key, cursor)
        if len(session.subscribers) >= self.max_subscribers:
            raise StreamCapacityError("per-run", self.max_subscribers)
        if self.subscribers_total >= self.max_total:
            session.forget_when_idle()
            raise StreamCapacityError("per-server", self.max_total)
        sub = Subscriber(session, from_id, self.queue_size, lost)
        session.add(sub)
        return sub

    async def _initial_cursor(self, key: str) -> str | None:
        delay = 0.1
        for attempt in range(_INITIAL_CURSOR_ATTEMPTS):
            try:
                return await self.broker.latest_id(key)
            except Exception:
                if attempt == _INITIAL_CURSOR_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def forget(self, session: Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]

    def subscriber_count(self, key: str) -> int:
        session = self._sessions.get(key)
        return len(session.subscribers) if session else 0

    def shut_down(self) -> None:
        """Every subscriber gets `gap: shutdown` then `end`; new subscribers are refused."""
        self._closing = True
        for session in list(self._sessions.values()):
            session.shut_down()
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    @property
    def closing(self) -> bool:
        return self._closing
