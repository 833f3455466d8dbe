"""Which transport serves which client, so a stalled SSE client can be cut off for real.

An SSE write that times out (the client stopped reading) must release the connection, not
only the subscriber slot. `transport.close()` would wait for the unread buffer to drain,
which never happens; `abort()` drops it at once. The ASGI scope carries only the client's
address, so the uvicorn protocol class is extended to record its transport by that address.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("zstream_mp.server")

Address = tuple[str, int]


class ConnectionRegistry:
    """Open transports by client address (filled by `protocol_class`)."""

    def __init__(self) -> None:
        self._transports: dict[Address, asyncio.Transport] = {}

    def __len__(self) -> int:
        return len(self._transports)

    def protocol_class(self, base: type[Any]) -> type[Any]:
        """`base` (a uvicorn HTTP protocol) recording each connection here."""
        registry = self._transports

        class RecordedProtocol(base):  # type: ignore[misc]
            def connection_made(self, transport: asyncio.Transport) -> None:
                super().connection_made(transport)
                client = getattr(self, "client", None)
                if client is not None:
                    registry[tuple(client)] = transport

            def connection_lost(self, exc: Exception | None) -> None:
                client = getattr(self, "client", None)
                if client is not None and registry.get(tuple(client)) is self.transport:
                    del registry[tuple(client)]
                super().connection_lost(exc)

        return RecordedProtocol

    def abort(self, client: Any) -> bool:
        """Drop the connection of `client` (the scope's `client`) now; False if unknown."""
        if not client:
            return False
        transport = self._transports.pop(tuple(client), None)
        if transport is None:
            return False
        transport.abort()
        return True
