"""`server.models`: the broker frame of an event is ZenML's `EventFrame` bytes, built fast."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zstream_mp.server.models import EventFrame, StreamEvent, encode_event_frame, encode_frame

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.dictionaries(st.text(), _values, max_size=5),
    kind=st.text(min_size=1, max_size=20),
    step=st.none() | st.text(max_size=10),
    index=st.none() | st.integers(),
)
def test_the_event_frame_shortcut_writes_the_frame_models_bytes(
    payload: dict[str, object], kind: str, step: str | None, index: int | None
) -> None:
    event = StreamEvent(
        pipeline_run_id=uuid.uuid4(), kind=kind, step_name=step, index=index, payload=payload
    )
    try:
        expected = encode_frame(EventFrame(event=event))
    except ValueError:  # a lone surrogate in a value: refused by both ways of encoding
        with pytest.raises(ValueError):
            encode_event_frame(event)
        return
    assert encode_event_frame(event) == expected
