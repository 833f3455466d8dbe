"""`_encode`: one behaviour on both encoders (the stdlib's, and orjson's from the `fast`
extra), edge case by edge case and on generated payloads: the same bytes, or the same refusal."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zstream_mp import _encode, _event
from zstream_mp.errors import InvalidEventError

FAST = _encode.encode_fast
needs_fast = pytest.mark.skipif(
    FAST is None, reason="orjson (the `fast` extra) is not installed: its half is NOT tested"
)
ENCODERS = [
    pytest.param(_encode.encode_stdlib, id="stdlib"),
    pytest.param(FAST, id="orjson", marks=needs_fast),
]


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


class Table(dict[str, Any]):
    pass


class Items(list[Any]):
    pass


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


# (id, payload, the bytes both encoders write)
WRITTEN: list[tuple[str, dict[str, Any], bytes]] = [
    ("compact-utf8", {"a": "é😀漢", "b": [1, 2]}, '{"a":"é😀漢","b":[1,2]}'.encode()),
    (
        "escapes",
        {"s": '\u2028\x00\x1f\x7f"\\/\n'},
        b'{"s":"\xe2\x80\xa8\\u0000\\u001f\x7f\\"\\\\/\\n"}',
    ),
    ("nan-inf-as-null", {"n": math.nan, "i": [math.inf, -math.inf]}, b'{"n":null,"i":[null,null]}'),
    (
        "int-64-bit-edges",
        {"a": 2**63 - 1, "b": -(2**63)},
        b'{"a":9223372036854775807,"b":-9223372036854775808}',
    ),
    (
        "int-beyond-64-bits",
        {"a": 2**64, "b": -(10**30)},
        b'{"a":18446744073709551616,"b":-1000000000000000000000000000000}',
    ),
    (
        "float-repr",
        {"a": 0.1, "b": 1e15, "c": 1e16, "d": 1.5e300, "e": -0.0},
        b'{"a":0.1,"b":1000000000000000.0,"c":1e+16,"d":1.5e+300,"e":-0.0}',
    ),
    (
        "float-small",
        {"a": 1e-4, "b": 1.5e-5, "c": 2.5e-7, "d": 1e-10, "e": 5e-324},
        b'{"a":0.0001,"b":0.000015,"c":2.5e-7,"d":1e-10,"e":5e-324}',
    ),
    ("float-like-text-kept", {"s": "1e-05", "t": '"1e-07'}, b'{"s":"1e-05","t":"\\"1e-07"}'),
    ("tuple-as-array", {"t": (1, (2,))}, b'{"t":[1,[2]]}'),
    (
        "nested-non-str-keys",
        {"d": {2: "a", 1.5: "b", True: "c", None: "d"}},
        b'{"d":{"2":"a","1.5":"b","true":"c","null":"d"}}',
    ),
    ("str-subclass", {"a": Text("x"), Text("k"): 1}, b'{"a":"x","k":1}'),
    ("int-float-subclass", {"a": Number(5), "b": Real(1.5)}, b'{"a":5,"b":1.5}'),
    ("dict-list-subclass", {"a": Table(b=1), "c": Items([2])}, b'{"a":{"b":1},"c":[2]}'),
    ("ordered-dict", {"a": collections.OrderedDict(z=1, y=2)}, b'{"a":{"z":1,"y":2}}'),
    ("enum-value", {"a": Colour.RED, "b": Level.HIGH}, b'{"a":"red","b":3}'),
    ("uuid", {"u": uuid.UUID(int=1)}, b'{"u":"00000000-0000-0000-0000-000000000001"}'),
    ("deeper-than-orjson", {"d": _deep(300)}, b'{"d":' + b"[" * 301 + b"]" * 301 + b"}"),
    ("empty", {}, b"{}"),
]


def _cyclic() -> dict[str, Any]:
    payload: dict[str, Any] = {}
    payload["self"] = payload
    return payload


REFUSED: list[tuple[str, dict[Any, Any], str]] = [
    ("top-level-int-key", {1: "a"}, "keys must be str"),
    ("top-level-none-key", {None: "a"}, "keys must be str"),
    ("lone-surrogate", {"s": "\ud800"}, "surrogates not allowed"),
    ("lone-surrogate-key", {"a": {"\udfff": 1}}, "surrogates not allowed"),
    ("non-finite-key", {"a": {math.nan: 1}}, "Out of range float"),
    ("set", {"a": {1, 2}}, "set"),
    ("bytes", {"a": b"x"}, "bytes"),
    ("datetime", {"a": datetime.datetime(2024, 1, 1)}, "datetime"),
    ("dataclass", {"a": Point(1)}, "Point"),
    ("object", {"a": object()}, "object"),
    ("self-referring", _cyclic(), "refers to itself"),
]


@pytest.mark.parametrize("encode", ENCODERS)
@pytest.mark.parametrize(("payload", "expected"), [pytest.param(p, b, id=i) for i, p, b in WRITTEN])
def test_each_encoder_writes_the_rule_s_bytes(
    encode: _encode.Encoder, payload: dict[str, Any], expected: bytes
) -> None:
    assert encode(payload) == expected
    assert json.loads(expected) is not None  # valid JSON, whatever the rule


@pytest.mark.parametrize("encode", ENCODERS)
@pytest.mark.parametrize(("payload", "reason"), [pytest.param(p, r, id=i) for i, p, r in REFUSED])
def test_each_encoder_refuses_the_same_with_a_typed_error(
    encode: _encode.Encoder, payload: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEventError, match=reason) as info:
        encode(payload)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    assert encode({"after": 1}) == b'{"after":1}'  # the encoder still works


def test_a_float_with_a_padded_exponent_is_written_unpadded() -> None:
    """Python writes `1e-07`; the rule (and orjson) `1e-7`, and `0.00001` for `1e-05`."""
    for value, written in [
        (1e-5, "0.00001"),
        (-1.5000000000000002e-05, "-0.000015000000000000002"),
        (9.999999999999999e-05, "0.00009999999999999999"),
        (1e-6, "1e-6"),
        (-2.5e-9, "-2.5e-9"),
        (1e-10, "1e-10"),
    ]:
        assert _encode.encode_stdlib({"v": [value]}) == f'{{"v":[{written}]}}'.encode()
        assert json.loads(written) == value


KEYS = st.text(max_size=8)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text()
    | st.sampled_from([Colour.RED, Level.HIGH, uuid.UUID(int=7), Text("t"), Number(9)])
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(KEYS | st.integers() | st.booleans() | st.none(), inner, max_size=4)
    ),
    max_leaves=20,
)
PAYLOADS = st.dictionaries(KEYS, VALUES, max_size=6)


def _outcome(encode: _encode.Encoder, payload: dict[str, Any]) -> bytes | str:
    try:
        return encode(payload)
    except InvalidEventError as exc:
        return f"refused: {exc}"


@needs_fast
@settings(max_examples=400, deadline=None)
@given(PAYLOADS)
def test_both_encoders_write_the_same_bytes_or_refuse_alike(payload: dict[str, Any]) -> None:
    assert FAST is not None
    stdlib = _outcome(_encode.encode_stdlib, payload)
    assert _outcome(FAST, payload) == stdlib
    if isinstance(stdlib, bytes):  # and the bytes are the JSON of the same values
        assert json.loads(stdlib) == json.loads(
            json.dumps(_encode._finite(payload), default=_encode._default)
        )


@needs_fast
@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_is_written_alike(value: float) -> None:
    assert FAST is not None
    assert FAST({"v": value}) == _encode.encode_stdlib({"v": value})
    assert json.loads(FAST({"v": value}))["v"] == value


def test_publish_uses_the_fast_encoder_when_installed_and_can_be_told_otherwise() -> None:
    assert _event.encode_json is (FAST or _encode.encode_stdlib)
    try:
        _event.use_encoder("stdlib")
        assert _event.encode_json is _encode.encode_stdlib
        assert _event.encode_payload({"n": math.nan}) == b'{"n":null}'
    finally:
        _event.use_encoder("orjson" if FAST else "stdlib")


def test_an_orjson_that_writes_differently_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes guard against an orjson release whose number format changed."""
    orjson = pytest.importorskip("orjson", reason="orjson (the `fast` extra) is not installed")
    real = orjson.dumps
    monkeypatch.setattr(orjson, "dumps", lambda *a: real(*a).replace(b"e+16", b"e16"))
    assert _encode._orjson() is None
    monkeypatch.setattr(orjson, "dumps", real)
    assert _encode._orjson() is not None
