"""`_event`: the one encoding, byte for byte ZenML's `StreamEvent.model_dump_json()`,
and the limits at their edges (65,536 bytes of payload, 69,632 of envelope)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from zstream_mp import _event
from zstream_mp._context import destination
from zstream_mp._stream_context import StreamContext
from zstream_mp._wire import ENVELOPE_BYTES_MAX, ENVELOPE_OVERHEAD, PAYLOAD_BYTES_MAX
from zstream_mp.errors import InvalidEventError, PayloadTooLargeError, ReservedKindError

models = pytest.importorskip("zstream_mp.server.models", reason="needs the server extra")

RUN = str(uuid.uuid4())
STEP = str(uuid.uuid4())


def encode(
    payload: Any,
    *,
    kind: str = "event",
    correlation_id: str | None = None,
    index: int | None = None,
    ctx: StreamContext | None = None,
) -> bytes:
    """What `publish()` queues, built from the same four pieces in the same order."""
    dest = destination(ctx or StreamContext(RUN, STEP, "train"))
    return _event.assemble(
        dest.prefix,
        _event.check_kind(kind),
        _event.encode_tail(correlation_id, index),
        _event.encode_payload(payload),
    )


def zenml(**fields: Any) -> bytes:
    """ZenML's encoding of the same event: `StreamEvent(...).model_dump_json()`."""
    return models.StreamEvent(**fields).model_dump_json().encode()


@pytest.mark.parametrize(
    ("payload", "kind", "correlation_id", "index"),
    [
        ({"token": "hello"}, "token", "chat-1", 0),
        ({}, "event", None, None),
        ({"t": "ünïcødé ✓ 😀", "q": '"quoted"\\\n'}, "tök", "ü", -3),
        ({"n": [1, 2.5, None, True], "d": {"x": {"y": []}}}, "a.b:c", "", 2**40),
        ({"big": 1e300, "small": 5e-324, "neg": -0.0}, "event", None, 7),
    ],
)
def test_bytes_equal_zenml_model_dump_json(
    payload: dict[str, Any], kind: str, correlation_id: str | None, index: int | None
) -> None:
    ours = encode(payload, kind=kind, correlation_id=correlation_id, index=index)
    theirs = zenml(
        pipeline_run_id=RUN,
        step_run_id=STEP,
        step_name="train",
        kind=kind,
        correlation_id=correlation_id,
        index=index,
        payload=payload,
    )
    assert ours == theirs


def test_without_step_the_nulls_are_written() -> None:
    ours = encode({"a": 1}, ctx=StreamContext(RUN))
    assert ours == zenml(pipeline_run_id=RUN, kind="event", payload={"a": 1})
    assert list(json.loads(ours)) == [
        "pipeline_run_id",
        "step_run_id",
        "step_name",
        "kind",
        "correlation_id",
        "index",
        "payload",
    ]


def _payload_of_size(size: int) -> dict[str, str]:
    base = len(json.dumps({"p": ""}, separators=(",", ":")))
    return {"p": "x" * (size - base)}


def test_payload_at_65536_bytes_passes_and_65537_is_refused() -> None:
    exact = _payload_of_size(PAYLOAD_BYTES_MAX)
    assert len(_event.encode_payload(exact)) == 65_536
    with pytest.raises(PayloadTooLargeError, match="65537"):
        _event.encode_payload(_payload_of_size(PAYLOAD_BYTES_MAX + 1))


def test_payload_size_counts_utf8_bytes_not_characters() -> None:
    chars = (PAYLOAD_BYTES_MAX - len('{"p":""}')) // 2 + 1  # two bytes each: one over
    with pytest.raises(PayloadTooLargeError):
        _event.encode_payload({"p": "é" * chars})


def test_envelope_at_69632_bytes_passes_and_one_more_is_refused() -> None:
    probe = encode({"p": ""}, kind="k", correlation_id="")
    room = ENVELOPE_BYTES_MAX - ENVELOPE_OVERHEAD - len(probe)
    # The payload stays under its own limit; the correlation id fills the envelope.
    event = encode({"p": ""}, kind="k", correlation_id="c" * room)
    assert len(event) + ENVELOPE_OVERHEAD == 69_632
    frame = models.EventFrame(event=models.StreamEvent.model_validate_json(event))
    assert len(frame.model_dump_json().encode()) == 69_632  # the broker's own measure
    with pytest.raises(PayloadTooLargeError, match="69633"):
        encode({"p": ""}, kind="k", correlation_id="c" * (room + 1))


@pytest.mark.parametrize("kind", ["end", "gap", "error", "cursor", "system"])
def test_reserved_kinds(kind: str) -> None:
    with pytest.raises(ReservedKindError):
        _event.check_kind(kind)


@pytest.mark.parametrize(
    ("payload", "kind", "correlation_id", "index"),
    [
        ([1], "event", None, None),
        ({1: "x"}, "event", None, None),
        ({"x": {float("nan"): 1}}, "event", None, None),
        ({"x": {1, 2}}, "event", None, None),
        ({"x": b"raw"}, "event", None, None),
        ({}, "", None, None),
        ({}, "two\nlines", None, None),
        ({}, 5, None, None),
        ({}, "event", 5, None),
        ({}, "event", None, True),
        ({}, "event", None, "1"),
    ],
)
def test_bad_input_is_invalid_event_error(
    payload: Any, kind: Any, correlation_id: Any, index: Any
) -> None:
    with pytest.raises(InvalidEventError) as info:
        encode(payload, kind=kind, correlation_id=correlation_id, index=index)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_a_mapping_is_encoded_as_its_dict() -> None:
    from types import MappingProxyType

    assert _event.encode_payload(MappingProxyType({"a": 1})) == b'{"a":1}'


def test_a_payload_that_refers_to_itself_is_invalid_event_error() -> None:
    payload: dict[str, Any] = {}
    payload["self"] = payload
    with pytest.raises(InvalidEventError, match="refers to itself"):
        _event.encode_payload(payload)
    assert _event.encode_payload({"after": 1}) == b'{"after":1}'  # the encoder still works


@pytest.mark.parametrize(
    "payload",
    [
        {"a": (1, 2), "b": [True, False, None], "c": {"d": {"e": [[], {}]}}},
        {"int": 2**70, "float": 0.1, "exp": 1e-3, "big": 1e300, "neg": -5, "bool": True},
        {"s": '\u2028\u2029\x00\x1f"\\/', "emoji": "😀", "cjk": "漢字"},
        {"k" * 100: "v" * 1000, "": ""},
    ],
)
def test_the_encoder_writes_what_the_stdlib_encoder_writes(payload: dict[str, Any]) -> None:
    """The once-built C encoder and `json.dumps` with the contract's options agree."""
    expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert _event.encode_payload(payload) == expected.encode()
