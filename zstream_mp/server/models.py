"""The wire models, defined exactly like ZenML 0.98.0's so encoded bytes match byte for byte.

`StreamEvent.model_dump_json()` is what an SSE `data:` line carries, and the broker frame
`{"type":"event","event":{...}}` is what a Redis stream entry's field `p` holds. Using the
same pydantic definitions (lax validation, `NaN` -> `null`, raw UTF-8) keeps a client from
telling this server from ZenML's, and lets both share one Redis.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Optional, Union
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from zstream_mp._wire import ENVELOPE_BYTES_MAX, MAX_BATCH_SIZE, PAYLOAD_BYTES_MAX, RESERVED_KINDS

__all__ = ["ENVELOPE_BYTES_MAX", "MAX_BATCH_SIZE", "PAYLOAD_BYTES_MAX", "RESERVED_KINDS"]


class StreamEvent(BaseModel):
    """One published event (field order is the wire order)."""

    pipeline_run_id: UUID
    step_run_id: Optional[UUID] = None  # noqa: UP045 - pydantic field, kept as ZenML spells it
    step_name: Optional[str] = None  # noqa: UP045
    kind: str
    correlation_id: Optional[str] = None  # noqa: UP045
    index: Optional[int] = None  # noqa: UP045
    payload: dict[str, Any] = Field(default_factory=dict)


class StreamBatchRequest(BaseModel):
    """The POST body: unknown fields are ignored, at most 1,000 events."""

    events: list[StreamEvent] = Field(max_length=MAX_BATCH_SIZE)


class EventFrame(BaseModel):
    """Broker entry holding one event."""

    model_config = ConfigDict(frozen=True)

    type: Literal["event"] = "event"
    event: StreamEvent


class EndFrame(BaseModel):
    """Broker entry marking the end of a run's stream."""

    model_config = ConfigDict(frozen=True)

    type: Literal["end"] = "end"


class UnknownFrame(BaseModel):
    """A broker entry this server does not understand (forward compatibility)."""

    model_config = ConfigDict(frozen=True)

    type: str


BrokerFrame = Annotated[Union[EventFrame, EndFrame], Field(discriminator="type")]  # noqa: UP007
DecodedFrame = Union[EventFrame, EndFrame, UnknownFrame]  # noqa: UP007

_frame_adapter: TypeAdapter[EventFrame | EndFrame] = TypeAdapter(BrokerFrame)
_uuid_adapter: TypeAdapter[UUID] = TypeAdapter(UUID)
_KNOWN_TYPES = frozenset({"event", "end"})


_STRING_OR_EXP = re.compile(rb'("(?:[^"\\]|\\.)*")|e\+')


def _plain_exponents(data: bytes) -> bytes:
    """`1e+20` -> `1e20` outside strings.

    pydantic-core up to 2.41 (pydantic 2.12, which ZenML 0.98.0 ships with) writes float
    exponents without `+`; later versions add it. The wire (and the 69,632-byte limit) follow
    ZenML's bytes, whichever pydantic is installed here.
    """
    if b"e+" not in data:
        return data
    return _STRING_OR_EXP.sub(lambda m: m.group(1) or b"e", data)


def encode_frame(frame: EventFrame | EndFrame) -> bytes:
    """Compact JSON of a broker frame, as ZenML's `encode_frame` produces it."""
    return _plain_exponents(_frame_adapter.dump_json(frame))


def event_json(event: StreamEvent) -> str:
    """`StreamEvent.model_dump_json()` with ZenML's float spelling: the SSE `data:` line."""
    return _plain_exponents(event.model_dump_json().encode()).decode()


_EVENT_FRAME_HEAD = b'{"type":"event","event":'
_event_to_json = StreamEvent.__pydantic_serializer__.to_json


def encode_event_frame(event: StreamEvent) -> bytes:
    """`encode_frame(EventFrame(event=event))` without building and validating the frame: the
    event's own JSON inside the frame's fixed head (the same bytes; a unit test holds them
    equal). Called once per ingested event."""
    return _plain_exponents(_EVENT_FRAME_HEAD + _event_to_json(event) + b"}")


END_FRAME_BYTES = encode_frame(EndFrame())


def decode_frame(payload: bytes) -> DecodedFrame:
    """Parse broker bytes; anything unparsable becomes an `UnknownFrame`, never an error."""
    try:
        return _frame_adapter.validate_json(payload)
    except ValidationError:
        pass
    try:
        parsed = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return UnknownFrame(type="?")
    type_value = parsed.get("type") if isinstance(parsed, dict) else None
    return UnknownFrame(type=str(type_value) if type_value else "?")


def parse_uuid(value: str) -> UUID:
    """Parse a path run id with pydantic's (lax) UUID rules; raises `ValidationError`."""
    return _uuid_adapter.validate_python(value)
