"""`_aio`: `aflush()` and `asubscribe()` keep the blocking calls' semantics without blocking
the event loop. `subscribe()` is replaced by scripted iterators here; its HTTP side has its
own tests (tests/test_asyncio.py runs both against a real server)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Any, cast

import pytest
from helpers.mock_server import SERVER, StoringServer

import zstream_mp
from zstream_mp import _aio
from zstream_mp._aio import aflush, asubscribe
from zstream_mp.consumer import Event, Gap
from zstream_mp.errors import InvalidRequestError, RunNotFoundError

RUN = str(uuid.uuid4())


def _event(i: int) -> Event:
    return Event(id=f"{i}-0", kind="event", pipeline_run_id=RUN, payload={"seq": i})


class Script:
    """Stands in for `subscribe()`: records its arguments, yields `items`, then raises
    `error` (if any), and says whether it was closed."""

    def __init__(self, items: list[Event | Gap], error: BaseException | None = None) -> None:
        self.items = items
        self.error = error
        self.kwargs: dict[str, Any] = {}
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    def __call__(self, server: str | None, run_id: object, **kwargs: Any) -> Iterator[Event | Gap]:
        self.kwargs = {"server": server, "run_id": run_id, **kwargs}
        return self._iterate()

    def _iterate(self) -> Iterator[Event | Gap]:
        self.thread = threading.current_thread()
        try:
            yield from self.items
            if self.error is not None:
                raise self.error
        finally:
            self.closed.set()


def _collect(**kwargs: Any) -> list[Event | Gap]:
    async def main() -> list[Event | Gap]:
        return [item async for item in asubscribe(SERVER, RUN, **kwargs)]

    return asyncio.run(main())


def test_events_and_gaps_arrive_in_order_then_the_iteration_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items: list[Event | Gap] = [_event(0), Gap("overflow"), _event(1)]
    script = Script(items)
    monkeypatch.setattr(_aio, "subscribe", script)
    assert _collect() == items
    assert script.closed.is_set()
    assert script.thread is not threading.main_thread()  # read in its own thread


def test_every_argument_reaches_subscribe(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script([])
    monkeypatch.setattr(_aio, "subscribe", script)
    _collect(token="t", kinds=["a"], since="5-0", timeout=3.0, reconnect=False, retry_for=1.0)
    assert script.kwargs["token"] == "t" and script.kwargs["kinds"] == ["a"]
    assert script.kwargs["since"] == "5-0" and script.kwargs["reconnect"] is False
    assert (script.kwargs["timeout"], script.kwargs["retry_for"]) == (3.0, 1.0)


def test_an_error_while_reading_is_raised_where_the_consumer_awaits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script([_event(0)], RunNotFoundError("gone", 404))
    monkeypatch.setattr(_aio, "subscribe", script)
    seen: list[Event | Gap] = []

    async def main() -> None:
        async for item in asubscribe(SERVER, RUN):
            seen.append(item)

    with pytest.raises(RunNotFoundError):
        asyncio.run(main())
    assert seen == [_event(0)]


def test_breaking_out_stops_and_closes_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script([_event(i) for i in range(10_000)])
    monkeypatch.setattr(_aio, "subscribe", script)

    async def main() -> list[Event | Gap]:
        out: list[Event | Gap] = []
        stream = cast(AsyncGenerator[Event | Gap, None], asubscribe(SERVER, RUN))
        async for item in stream:
            out.append(item)
            if len(out) == 3:
                break
        await stream.aclose()
        return out

    assert [e.id for e in asyncio.run(main()) if isinstance(e, Event)] == ["0-0", "1-0", "2-0"]
    assert script.closed.wait(10)


def test_a_bad_argument_is_the_same_typed_error_as_subscribes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zstream_mp._wire import ENV_SERVER

    monkeypatch.delenv(ENV_SERVER, raising=False)

    async def main() -> None:
        async for _ in asubscribe(None, RUN):
            pass

    with pytest.raises(InvalidRequestError, match="no server"):
        asyncio.run(main())


def test_aflush_delivers_like_flush(publisher: StoringServer) -> None:
    zstream_mp.bind(RUN, server=SERVER)
    zstream_mp.publish({"seq": 1})
    assert asyncio.run(aflush(10))
    assert publisher.seqs() == [1]


def test_aflush_runs_flush_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float | None, bool]] = []

    def flush(timeout: float | None = 2.0) -> bool:
        calls.append((timeout, threading.current_thread() is threading.main_thread()))
        return False

    monkeypatch.setattr(_aio, "flush", flush)
    assert asyncio.run(aflush(0.5)) is False
    assert calls == [(0.5, False)]
