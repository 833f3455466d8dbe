"""A payload's JSON bytes: one behaviour, two encoders.

The stdlib's C encoder always works; orjson (the `fast` extra) is used when it is installed
and writes the same bytes. Both follow these rules (`docs/semantics.md` has the table beside
ZenML's):

* compact, raw UTF-8 (no `\\uXXXX` for printable non-ASCII), the stdlib's string escapes;
* NaN and ±Infinity are written as `null` (as ZenML and orjson write them);
* floats as Python's `repr`, except that an exponent below -4 is written without its
  padding zero (`1e-7`, not `1e-07`) and one of -5 in fixed notation (`0.00001`): the form
  orjson writes, so that orjson's bytes never need a second look;
* ints of any size; tuples as arrays; subclasses of `str`, `int`, `float`, `dict`, `list`
  as their base type; enums as their value; UUIDs as their canonical string;
* nested keys of type int, float, bool or None become strings as `json.dumps` makes them;
  the top-level keys must be `str` (checked here, for both encoders);
* refused: lone surrogates, sets, bytes, datetimes, dataclasses and every other type, a
  self-referring payload, a non-finite float key.

orjson refuses some of what the rules accept (ints beyond 64 bits, non-str keys, nesting
deeper than 255, subclasses it passes through): the stdlib encoder then writes the payload.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from zstream_mp.errors import InvalidEventError

Encoder = Callable[[dict[str, Any]], bytes]


def _default(value: Any) -> Any:
    """What the stdlib encoder writes for a type it does not know (as orjson does)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder(allow_nan: bool) -> Callable[[Any], str]:
    """The C encoder built once (`json.dumps` builds one per call, more than half of the
    cost of a small payload). No cycle markers, which a shared encoder could not keep per
    thread: a cyclic payload ends in RecursionError."""
    if c_make_encoder is None:  # no _json accelerator (not CPython)
        import json

        encoder = json.JSONEncoder(
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=allow_nan,
            check_circular=False,
            default=_default,
        )
        return encoder.encode
    make = c_make_encoder(
        None, _default, encode_basestring, None, ":", ",", False, False, allow_nan
    )
    return lambda payload: "".join(make(payload, 0))


_encode_finite = _c_encoder(allow_nan=False)

_PADDED_EXPONENT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(-?)(\d)(?:\.(\d+))?e-0(\d)')
"""A JSON string (kept as it is) or a float written with a padded negative exponent."""


def _unpad(match: re.Match[str]) -> str:
    sign, lead, fraction, exponent = match.groups()
    if lead is None:
        return match.group(0)
    if exponent == "5":  # 1.5e-05 -> 0.000015
        return f"{sign}0.0000{lead}{fraction or ''}"
    return f"{sign}{lead}{'.' + fraction if fraction else ''}e-{exponent}"


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (containers copied)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _check_keys(payload: dict[str, Any]) -> None:
    try:
        "".join(payload)  # a TypeError unless every key is a str: C speed for the common case
        return
    except TypeError:
        pass
    for key in payload:
        if not isinstance(key, str):
            raise InvalidEventError(
                f"payload keys must be str, got {type(key).__name__} key {key!r:.80}"
            )


def encode_stdlib(payload: dict[str, Any]) -> bytes:
    """The payload's bytes by the stdlib's C encoder; InvalidEventError when refused."""
    _check_keys(payload)
    try:
        try:
            text = _encode_finite(payload)
        except ValueError:  # a NaN or an infinity somewhere: written as null
            text = _encode_finite(_finite(payload))
        if "e-0" in text:
            text = _PADDED_EXPONENT.sub(_unpad, text)
        return text.encode("utf-8")
    except RecursionError as exc:
        raise InvalidEventError(
            "Payload is not JSON-encodable: it refers to itself or nests too deeply"
        ) from exc
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidEventError(f"Payload is not JSON-encodable: {exc}") from exc


def _refuse(value: Any) -> Any:
    raise TypeError


class Orjson:
    """orjson's `dumps` with the options the rules need, for a caller that calls it itself
    (one Python frame fewer than `encode`) and falls back to `encode_stdlib` on TypeError."""

    def __init__(self, dumps: Callable[..., bytes], options: int) -> None:
        self.dumps = dumps
        self.default = _refuse
        self.options = options

    def encode(self, payload: dict[str, Any]) -> bytes:
        try:
            return self.dumps(payload, _refuse, self.options)
        except TypeError:  # orjson.JSONEncodeError: big int, non-str key, a passed-through type
            return encode_stdlib(payload)


def _orjson() -> Orjson | None:
    """orjson, with the stdlib encoder behind it for what orjson refuses; None when orjson
    is not installed or writes anything differently from the stdlib encoder."""
    try:
        import orjson
    except ImportError:
        return None
    fast = Orjson(
        orjson.dumps,
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME,
    )
    if any(fast.encode(probe) != encode_stdlib(probe) for probe in _PROBES):
        return None  # an orjson whose number or string format differs: not used
    return fast


_PROBES: list[dict[str, Any]] = [
    {"f": [0.1, 1e-4, 1.5e-5, 1e-5, 2.5e-7, 1e-9, 1e-10, 1e15, 1e16, 1.5e300, 5e-324, -0.0]},
    {"n": [math.nan, math.inf, -math.inf], "i": [2**63 - 1, -(2**63), 2**64, -(2**70)]},
    {"s": '\u2028\u2029\x00\x1f\x7f"\\/é😀', "t": (1, True, None), "u": uuid.UUID(int=1)},
]
"""Inputs on which an installed orjson must match the stdlib encoder to be used."""

ORJSON = _orjson()
"""orjson's encoder, None without the `fast` extra."""
encode_fast: Encoder | None = ORJSON.encode if ORJSON is not None else None
ENCODERS: dict[str, Encoder] = {"stdlib": encode_stdlib}
if encode_fast is not None:
    ENCODERS["orjson"] = encode_fast
