"""The SSE response: ZenML's headers, and a writer that stops when the client goes away."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

CACHE_CONTROL = "no-store, no-cache, must-revalidate"
SSE_HEADERS = {"Cache-Control": CACHE_CONTROL, "X-Accel-Buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream"


class SSEResponse(StreamingResponse):
    """A streaming response that stops its generator as soon as the client goes away.

    Starlette relies on `send` failing for ASGI 2.4 servers, but a write to a dead socket
    can succeed silently while the loop has not yet processed the connection loss. A
    subscriber would then linger (and count against the per-run cap). Listening for
    `http.disconnect` alongside the writer ends it promptly.
    """

    def __init__(self, frames: AsyncIterator[bytes]) -> None:
        super().__init__(frames, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def write() -> None:
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(write)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


async def _single(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


def single_frame(frame: bytes) -> SSEResponse:
    """An SSE response carrying one frame, then closing (the ended-run shortcut)."""
    return SSEResponse(_single(frame))
