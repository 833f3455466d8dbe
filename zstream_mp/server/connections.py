"""Which transport serves which client: a connection cap, a request-head timeout, aborts.

An SSE write that times out (the client stopped reading) must release the connection, not
only the subscriber slot. `transport.close()` would wait for the unread buffer to drain,
which never happens; `abort()` drops it at once. The ASGI scope carries only the client's
address, so the uvicorn protocol class is extended to record its transport by that address.

The same record bounds what a client can hold without sending a request (slowloris):

* a connection is *waiting* from when it opens, and again after each response, until the
  app is called for its next request (`request_started`); a connection waiting longer than
  `header_timeout` is aborted (uvicorn has no such timeout for a half-sent head);
* at most `max_connections` are open; a new one beyond that evicts the oldest waiting one
  (so half-sent heads cannot keep ingest out), and is refused only when none is waiting.

Hitting the cap is logged at most once a minute, never per accept; so is asyncio's own
"socket.accept() out of system resource" (`quiet_accept_errors`), should descriptors run
out anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from zstream_mp.server.config import MAX_CONNECTIONS

logger = logging.getLogger("zstream_mp.server")

Address = tuple[str, int]
_WARN_EVERY_S = 60.0


class ConnectionRegistry:
    """Open transports by client address (filled by `protocol_class`)."""

    def __init__(
        self, max_connections: int = MAX_CONNECTIONS, header_timeout: float = 10.0
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._transports: dict[Address, asyncio.Transport] = {}
        self._waiting: OrderedDict[Address, asyncio.TimerHandle] = OrderedDict()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self._warned = float("-inf")

    def __len__(self) -> int:
        return len(self._transports)

    def protocol_class(self, base: type[Any]) -> type[Any]:
        """`base` (a uvicorn HTTP protocol) recording each connection here."""
        registry = self

        class RecordedProtocol(base):  # type: ignore[misc]
            def connection_made(self, transport: asyncio.Transport) -> None:
                super().connection_made(transport)
                client = getattr(self, "client", None)
                if client is not None:
                    registry._opened(tuple(client), transport)

            def connection_lost(self, exc: Exception | None) -> None:
                client = getattr(self, "client", None)
                if client is not None:
                    registry._closed(tuple(client), self.transport)
                super().connection_lost(exc)

        return RecordedProtocol

    # -- called by the protocol -----------------------------------------------------------
    def _opened(self, client: Address, transport: asyncio.Transport) -> None:
        if len(self._transports) >= self.max_connections:
            if self._evict_oldest_waiting():
                self.evicted += 1
            else:
                self.refused += 1
                self._warn_cap()
                transport.abort()
                return
            self._warn_cap()
        self._transports[client] = transport
        self._wait(client)

    def _closed(self, client: Address, transport: asyncio.Transport | None) -> None:
        if self._transports.get(client) is transport:
            del self._transports[client]
            self._stop_waiting(client)

    # -- called by the app around each request -------------------------------------------
    def request_started(self, client: Any) -> None:
        """The app got a whole request head from `client`: it is no longer waiting."""
        if client:
            self._stop_waiting(tuple(client))

    def request_finished(self, client: Any) -> None:
        """The response is done: the connection waits (bounded) for its next request."""
        if client and tuple(client) in self._transports:
            self._wait(tuple(client))

    # -- internals ------------------------------------------------------------------------
    def _wait(self, client: Address) -> None:
        self._stop_waiting(client)
        loop = asyncio.get_running_loop()
        self._waiting[client] = loop.call_later(self.header_timeout, self._expire, client)

    def _stop_waiting(self, client: Address) -> None:
        timer = self._waiting.pop(client, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, client: Address) -> None:
        self._waiting.pop(client, None)
        transport = self._transports.pop(client, None)
        if transport is not None:
            self.timed_out += 1
            transport.abort()

    def _evict_oldest_waiting(self) -> bool:
        while self._waiting:
            client, timer = self._waiting.popitem(last=False)
            timer.cancel()
            transport = self._transports.pop(client, None)
            if transport is not None:
                transport.abort()
                return True
        return False

    def _warn_cap(self) -> None:
        now = time.monotonic()
        if now - self._warned < _WARN_EVERY_S:
            return
        self._warned = now
        logger.warning(
            "connection cap %d reached: dropping connections that sent no request head "
            "(%d dropped, %d refused so far; next note in %.0f s)",
            self.max_connections,
            self.evicted,
            self.refused,
            _WARN_EVERY_S,
        )

    def abort(self, client: Any) -> bool:
        """Drop the connection of `client` (the scope's `client`) now; False if unknown."""
        if not client:
            return False
        transport = self._transports.pop(tuple(client), None)
        if transport is None:
            return False
        self._stop_waiting(tuple(client))
        transport.abort()
        return True


class _OncePerMinute(logging.Filter):
    """Lets asyncio's accept-failure record (a traceback) through once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._last = float("-inf")
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        now = time.monotonic()
        if now - self._last < _WARN_EVERY_S:
            self.dropped += 1
            return False
        self._last = now
        return True


_accept_filter = _OncePerMinute()


def quiet_accept_errors() -> None:
    """Install the filter on asyncio's logger (once per process)."""
    target = logging.getLogger("asyncio")
    if _accept_filter not in target.filters:
        target.addFilter(_accept_filter)
