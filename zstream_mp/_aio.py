"""asyncio: `aflush()` and `asubscribe()`, the awaitable forms of `flush()` and
`subscribe()`.

Both run the blocking call in a worker thread, so they keep its exact semantics (the
deadline, the reconnects with `Last-Event-ID`, no duplicates across them, `Gap`, the
stop at `end`) and never block the event loop. Binding a run per task is
`with bind(...)` (`contextvars`); `publish()` never blocks, so it needs no async form.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING
from uuid import UUID

from zstream_mp._api import flush
from zstream_mp._sender import THREAD_PREFIX
from zstream_mp.consumer import Event, Gap, subscribe

if TYPE_CHECKING:  # asyncio is imported where it is used: `import zstream_mp` stays light
    import asyncio

QUEUE_SIZE = 1024
"""Events read ahead of the consumer; the reading thread waits when it is full."""


async def aflush(timeout: float | None = 2.0) -> bool:
    """`flush(timeout)` without blocking the event loop."""
    import asyncio

    return await asyncio.to_thread(flush, timeout)


_DONE = object()


async def asubscribe(
    server: str | None,
    run_id: str | UUID,
    *,
    token: str | None = None,
    kinds: str | Iterable[str] | None = None,
    correlation_ids: str | Iterable[str] | None = None,
    step_names: str | Iterable[str] | None = None,
    since: str | None = None,
    timeout: float | None = 90.0,
    reconnect: bool = True,
    retry_for: float = 60.0,
    connect_timeout: float = 10.0,
) -> AsyncIterator[Event | Gap]:
    """`async for event in asubscribe(...)`: `subscribe()`'s events, awaited.

    Arguments and errors are `subscribe()`'s; closing the iterator (`break`, a
    cancelled task) stops the reading thread at its next event or heartbeat.
    """
    events = subscribe(
        server,
        run_id,
        token=token,
        kinds=kinds,
        correlation_ids=correlation_ids,
        step_names=step_names,
        since=since,
        timeout=timeout,
        reconnect=reconnect,
        retry_for=retry_for,
        connect_timeout=connect_timeout,
    )
    import asyncio

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
    stop = threading.Event()
    thread = threading.Thread(
        target=_pump,
        args=(events, loop, queue, stop),
        name=f"{THREAD_PREFIX}asubscribe",
        daemon=True,
    )
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, (Event, Gap))
            yield item
    finally:
        stop.set()


def _pump(
    events: Iterator[Event | Gap],
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[object],
    stop: threading.Event,
) -> None:
    """In the reading thread: hand each event to the loop, waiting while its queue is full."""
    item: object = _DONE
    try:
        for event in events:
            if not _put(loop, queue, event, stop):
                return
    except BaseException as exc:  # handed to the consumer, raised where it awaits
        item = exc
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    _put(loop, queue, item, stop)


def _put(
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[object],
    item: object,
    stop: threading.Event,
) -> bool:
    """False when the consumer is gone (closed, or its loop stopped)."""
    import asyncio

    if stop.is_set() or loop.is_closed():
        return False
    try:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
    except RuntimeError:  # the loop is closed
        return False
    while not stop.is_set():
        try:
            future.result(timeout=0.5)
            return True
        except concurrent.futures.TimeoutError:
            continue
        except Exception:
            return False
    future.cancel()
    return False
