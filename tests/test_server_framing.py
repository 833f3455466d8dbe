"""Unit tests: SSE bytes, broker frames and filters are byte-identical to ZenML 0.98.0's."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

pytest.importorskip("starlette")

from zstream_mp.server.broadcaster import SubscriberEnd, SubscriberEntry, SubscriberGap
from zstream_mp.server.brokers import BrokerEntry, stream_key
from zstream_mp.server.brokers.memory import InMemoryBroker
from zstream_mp.server.brokers.redis_streams import RedisStreamsBroker
from zstream_mp.server.framing import PING, EventFilter, format_frame, frame_for
from zstream_mp.server.models import (
    END_FRAME_BYTES,
    EventFrame,
    StreamEvent,
    UnknownFrame,
    decode_frame,
    encode_frame,
    event_json,
)

RUN = "d7b49f71-6347-4dc5-bd70-ad945cadf842"
STEP = "50c5fa13-9d11-4613-b83f-90f07ab5fbcc"
# Captured from ZenML 0.98.0 (shared/peers/zenml/wire_samples.md §1)
ZENML_FRAME = (
    "id: 1795642057488-0\nevent: token\ndata: "
    '{"pipeline_run_id":"d7b49f71-6347-4dc5-bd70-ad945cadf842","step_run_id":'
    '"50c5fa13-9d11-4613-b83f-90f07ab5fbcc","step_name":"chatty_step","kind":"token",'
    '"correlation_id":"chat-A","index":0,"payload":{"token":"tok-0","text":"héllo ✓"}}\n\n'
).encode()


def _entry(event: StreamEvent, entry_id: str = "1795642057488-0") -> SubscriberEntry:
    return SubscriberEntry.decode(BrokerEntry(entry_id, encode_frame(EventFrame(event=event))))


def _event(**kw: object) -> StreamEvent:
    base: dict[str, object] = {"pipeline_run_id": RUN, "kind": "token"}
    base.update(kw)
    return StreamEvent.model_validate(base)


def test_event_frame_matches_zenml_capture() -> None:
    event = _event(
        step_run_id=STEP,
        step_name="chatty_step",
        correlation_id="chat-A",
        index=0,
        payload={"token": "tok-0", "text": "héllo ✓"},
    )
    frame, terminal = frame_for(_entry(event), EventFilter())
    assert frame == ZENML_FRAME and not terminal


def test_control_frames() -> None:
    assert frame_for(SubscriberEnd(), EventFilter()) == (b"event: end\ndata: {}\n\n", True)
    assert frame_for(SubscriberGap("overflow"), EventFilter())[0] == (
        b'event: gap\ndata: {"reason": "overflow"}\n\n'
    )
    end_entry = SubscriberEntry.decode(BrokerEntry("7", END_FRAME_BYTES))
    assert frame_for(end_entry, EventFilter()) == (b"event: end\ndata: {}\n\n", True)
    assert PING == b": ping\n\n"
    unknown = SubscriberEntry.decode(BrokerEntry("8", b'{"type":"future"}'))
    assert frame_for(unknown, EventFilter())[0] == (
        b'id: 8\nevent: cursor\ndata: {"unknown_type": "future"}\n\n'
    )
    garbage = SubscriberEntry.decode(BrokerEntry("9", b"\xff not json"))
    assert isinstance(garbage.frame, UnknownFrame)
    assert frame_for(garbage, EventFilter())[0] == (
        b'id: 9\nevent: cursor\ndata: {"unknown_type": "?"}\n\n'
    )


def test_unsafe_kind_and_filters_become_cursor_frames() -> None:
    cursor = b"id: 5\nevent: cursor\ndata: {}\n\n"
    assert frame_for(_entry(_event(kind="a\nb"), "5"), EventFilter())[0] == cursor
    assert frame_for(_entry(_event(kind="a\rb"), "5"), EventFilter())[0] == cursor
    only_x = EventFilter.of(["x"], [], [])
    assert frame_for(_entry(_event(kind="token"), "5"), only_x)[0] == cursor
    by_step = EventFilter.of([], ["s"], [])
    assert frame_for(_entry(_event(step_name=None), "5"), by_step)[0] == cursor  # null never
    both = EventFilter.of(["token", "x"], [], ["c1"])
    assert frame_for(_entry(_event(correlation_id="c1"), "5"), both)[0].startswith(b"id: 5\n")
    assert frame_for(_entry(_event(correlation_id="c2"), "5"), both)[0] == cursor


def test_encoding_details_follow_pydantic() -> None:
    event = _event(
        payload={
            "nan": float("nan"),
            "inf": float("inf"),
            "f": 1e-7,
            "one": 1.0,
            "big": 10**30,
            "u": "ü✓",
            "nested": {"a": [1, 2, None]},
            "e20": 1e20,
            "e16": 1e16,
            "e15": 1e15,
        }
    )
    data = event_json(event)
    assert '"e20":1e20' in data and '"e16":1e16' in data and '"e15":1000000000000000.0' in data
    assert '"nan":null' in data and '"inf":null' in data
    assert (
        '"f":1e-7' in data
        and '"one":1.0' in data
        and '"big":1000000000000000000000000000000' in data
    )
    assert '"u":"ü✓"' in data
    assert END_FRAME_BYTES == b'{"type":"end"}'
    frame = encode_frame(EventFrame(event=event))
    assert frame.startswith(b'{"type":"event","event":{"pipeline_run_id":')
    decoded = decode_frame(frame)
    assert isinstance(decoded, EventFrame) and decoded.event.payload["nan"] is None


def test_format_frame_rejects_newlines_and_omits_empty_id() -> None:
    assert format_frame("x", "{}", "") == b"event: x\ndata: {}\n\n"
    with pytest.raises(ValueError):
        format_frame("x", "{}\n")


def test_cursor_validation_messages() -> None:
    memory = InMemoryBroker()
    memory.validate_cursor("0")
    memory.validate_cursor("123")
    with pytest.raises(ValueError, match=r"^cursor '1-0' is not a non-negative integer$"):
        memory.validate_cursor("1-0")
    redis = RedisStreamsBroker("redis://127.0.0.1:1/0")
    redis.validate_cursor("1795642057488-0")
    for bad in ("12", "$", ">", "+", "-", "a-1", "1-"):
        with pytest.raises(
            ValueError, match=r"is not a valid Redis stream id \(expected `<ms>-<seq>`\)"
        ):
            redis.validate_cursor(bad)


def test_stream_key_layout() -> None:
    run = uuid.UUID(RUN)
    assert stream_key("dep", str(run)) == f"zenml:stream:server:dep:run:{RUN}"


def test_memory_broker_ids_retention_and_blocking_read() -> None:
    async def scenario() -> None:
        broker = InMemoryBroker(max_len=5)
        assert await broker.latest_id("k") is None
        assert await broker.publish("k", [b"a", b"b", b"c"]) == "3"
        assert [e.id for e in await broker.read("k", None, block_ms=0)] == ["1", "2", "3"]
        assert [e.payload for e in await broker.read("k", "1", block_ms=0)] == [b"b", b"c"]
        assert await broker.read("k", "3", block_ms=0) == []
        await broker.publish("k", [b"d", b"e", b"f", b"g"])  # trims 1, 2
        assert await broker.oldest_id("k") == "3" and await broker.latest_id("k") == "7"
        assert [e.id for e in await broker.read("k", "0", max_count=2, block_ms=0)] == ["3", "4"]
        waiter = asyncio.ensure_future(broker.read("k", "7", block_ms=2000))
        await asyncio.sleep(0.05)
        await broker.publish("k", [b"h"])
        assert [e.id for e in await waiter] == ["8"]
        assert await broker.read("k", "8", block_ms=50) == []
        assert await broker.publish("other", [b"x"]) == "1"  # ids per stream

    asyncio.run(scenario())


def test_memory_broker_ttl_keeps_ids_increasing() -> None:
    async def scenario() -> None:
        broker = InMemoryBroker(ttl_seconds=0.05)
        await broker.publish("k", [b"a", b"b"])
        await asyncio.sleep(0.1)
        assert await broker.latest_id("k") is None  # expired
        assert await broker.publish("k", [b"c"]) == "3"

    asyncio.run(scenario())


def test_frame_json_reason_is_json_dumps() -> None:
    body = frame_for(SubscriberGap("outage"), EventFilter())[0].decode()
    assert json.loads(body.split("data: ", 1)[1]) == {"reason": "outage"}
