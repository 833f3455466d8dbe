"""The SSE response: ZenML's headers, a writer that stops when the client goes away, and a
write timeout that cuts off a client that stopped reading (freeing its subscriber slot)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger("zstream_mp.server")

CACHE_CONTROL = "no-store, no-cache, must-revalidate"
SSE_HEADERS = {"Cache-Control": CACHE_CONTROL, "X-Accel-Buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream"


class SSEResponse(StreamingResponse):
    """A streaming response that stops its generator as soon as the client goes away.

    Starlette relies on `send` failing for ASGI 2.4 servers, but a write to a dead socket
    can succeed silently while the loop has not yet processed the connection loss. A
    subscriber would then linger (and count against the per-run cap). Listening for
    `http.disconnect` alongside the writer ends it promptly.

    A write that waits longer than `write_timeout` for the client (its receive window stays
    full) ends the response and calls `on_stalled(client)`, which aborts the connection.
    """

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        *,
        write_timeout: float | None = None,
        on_stalled: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(frames, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
        self.write_timeout = write_timeout
        self.on_stalled = on_stalled
        self.stalled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = self.write_timeout

        async def timed_send(message: Message) -> None:
            if timeout is None:
                await send(message)
                return
            with anyio.fail_after(timeout):
                await send(message)

        async with anyio.create_task_group() as group:

            async def write() -> None:
                try:
                    await self.stream_response(timed_send)
                except TimeoutError:  # an OSError subclass: caught before the others
                    self.stalled = True
                    client = scope.get("client")
                    aborted = self.on_stalled(client) if self.on_stalled else False
                    logger.info(
                        "SSE client %s stopped reading for %.1f s: %s",
                        client,
                        timeout,
                        "connection aborted" if aborted else "response ended",
                    )
                    await asyncio.sleep(0)  # let the transport report the loss first
                except OSError:
                    pass  # the client went away mid-write
                finally:
                    await _close(self.body_iterator)
                group.cancel_scope.cancel()

            group.start_soon(write)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


async def _close(frames: Any) -> None:
    """Finish the frame generator now (its `finally` frees the subscriber slot)."""
    aclose = getattr(frames, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def _single(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


def single_frame(frame: bytes) -> SSEResponse:
    """An SSE response carrying one frame, then closing (the ended-run shortcut)."""
    return SSEResponse(_single(frame))
