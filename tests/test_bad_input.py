"""Bad input fails at the call site with its typed error, and loses nothing already queued.

Table-driven: every row is one `publish()` call that must raise exactly `error` (which is
also an instance of the builtins listed), interleaved with good events tagged by `seq`.
At the end the recording server holds exactly the good events, and `stats()` counts them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.faultserver import FaultProcess

from zstream_mp import bind, flush, publish, stats
from zstream_mp._wire import ENV_BATCH_SIZE, ENV_EXIT_TIMEOUT, ENV_IDLE_EXIT, ENV_RETRY_DEADLINE
from zstream_mp.errors import (
    InvalidEventError,
    PayloadTooLargeError,
    ReservedKindError,
    ZStreamError,
)

LIMIT = 65_536
ENVELOPE_LIMIT = 69_632


def compact(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sized(size: int, char: str = "a", **fields: Any) -> dict[str, Any]:
    """A payload whose compact UTF-8 JSON is exactly `size` bytes (filler char `char`)."""
    base = {**fields, "x": ""}
    room = size - len(compact(base))
    width = len(char.encode("utf-8"))
    count, rest = divmod(room, width)
    payload = {**fields, "x": char * count + "a" * rest}
    assert len(compact(payload)) == size
    return payload


def circular() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


def circular_list() -> dict[str, Any]:
    items: list[Any] = []
    items.append(items)
    return {"items": items}


IE, VE, TE = InvalidEventError, ValueError, TypeError
# (id, kwargs for publish, exact error class, builtins it must also be)
BAD: list[tuple[str, dict[str, Any], type[Exception], tuple[type[Exception], ...]]] = [
    ("payload-list", {"payload": [1, 2]}, IE, (VE, TE)),
    ("payload-str", {"payload": "text"}, IE, (VE, TE)),
    ("payload-none", {"payload": None}, IE, (VE, TE)),
    ("payload-int", {"payload": 3}, IE, (VE, TE)),
    ("key-int", {"payload": {1: "a"}}, IE, (VE, TE)),
    ("key-tuple", {"payload": {(1, 2): "a"}}, IE, (VE, TE)),
    ("key-none", {"payload": {None: "a"}}, IE, (VE, TE)),
    ("nan-key", {"payload": {"v": {math.nan: 1}}}, IE, (VE, TE)),
    ("set", {"payload": {"v": {1, 2}}}, IE, (VE, TE)),
    ("frozenset", {"payload": {"v": frozenset()}}, IE, (VE, TE)),
    ("bytes", {"payload": {"v": b"raw"}}, IE, (VE, TE)),
    ("object", {"payload": {"v": object()}}, IE, (VE, TE)),
    ("circular-dict", {"payload": circular()}, IE, (VE, TE)),
    ("circular-list", {"payload": circular_list()}, IE, (VE, TE)),
    ("lone-surrogate", {"payload": {"v": "\ud800"}}, IE, (VE, TE)),
    ("too-large-65537", {"payload": sized(LIMIT + 1)}, PayloadTooLargeError, (VE,)),
    ("too-large-2byte", {"payload": sized(LIMIT + 1, "\u00e9")}, PayloadTooLargeError, (VE,)),
    ("too-large-3byte", {"payload": sized(LIMIT + 1, "\u20ac")}, PayloadTooLargeError, (VE,)),
    ("too-large-4byte", {"payload": sized(LIMIT + 1, "\U0001f600")}, PayloadTooLargeError, (VE,)),
    # fewer characters than the limit, more bytes: the limit is on UTF-8 bytes
    ("too-large-chars-under", {"payload": {"x": "\u00e9" * 40_000}}, PayloadTooLargeError, (VE,)),
    ("too-large-1MiB", {"payload": {"x": "a" * 1_048_576}}, PayloadTooLargeError, (VE,)),
    *[
        (f"reserved-{k}", {"payload": {}, "kind": k}, ReservedKindError, (VE,))
        for k in ("end", "gap", "error", "cursor", "system")
    ],
    ("index-str", {"payload": {}, "index": "1"}, IE, (VE, TE)),
    ("index-float", {"payload": {}, "index": 1.0}, IE, (VE, TE)),
    ("index-bool", {"payload": {}, "index": True}, IE, (VE, TE)),
    ("correlation-int", {"payload": {}, "correlation_id": 7}, IE, (VE, TE)),
    ("correlation-bytes", {"payload": {}, "correlation_id": b"c"}, IE, (VE, TE)),
    ("kind-huge", {"payload": {}, "kind": "k" * ENVELOPE_LIMIT}, PayloadTooLargeError, (VE,)),
    ("kind-newline", {"payload": {}, "kind": "a\nb"}, IE, (VE, TE)),
    ("kind-cr", {"payload": {}, "kind": "a\rb"}, IE, (VE, TE)),
    ("kind-int", {"payload": {}, "kind": 5}, IE, (VE, TE)),
    ("kind-none", {"payload": {}, "kind": None}, IE, (VE, TE)),
]

# Good events that sit right at the limits: must be accepted and delivered.
GOOD_EDGE: list[tuple[str, dict[str, Any]]] = [
    ("exactly-65536", {"payload": sized(LIMIT, seq=-1)}),
    ("exactly-65536-2byte", {"payload": sized(LIMIT, "\u00e9", seq=-1)}),
    ("exactly-65536-3byte", {"payload": sized(LIMIT, "\u20ac", seq=-1)}),
    ("exactly-65536-4byte", {"payload": sized(LIMIT, "\U0001f600", seq=-1)}),
    ("non-ascii-kind", {"payload": {"seq": -1}, "kind": "t\u00f6ken"}),
    ("index-int", {"payload": {"seq": -1}, "index": 2**40}),
    ("correlation-str", {"payload": {"seq": -1}, "correlation_id": "c-1"}),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProcess]:
    with FaultProcess(tmp_path_factory.mktemp("bad-input")) as fp:
        yield fp


def test_error_classes_are_documented_builtins() -> None:
    assert issubclass(InvalidEventError, ZStreamError)
    assert issubclass(InvalidEventError, ValueError)
    assert issubclass(InvalidEventError, TypeError)
    assert issubclass(ReservedKindError, ValueError)
    assert issubclass(PayloadTooLargeError, ValueError)


@pytest.mark.parametrize(("name", "kwargs", "error", "builtins"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_at_call_site(
    name: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    builtins: tuple[type[Exception], ...],
    server: FaultProcess,
) -> None:
    run = str(uuid.uuid4())
    with bind(run, server=server.url):
        before = stats()
        with pytest.raises(Exception) as info:
            publish(**kwargs)
        after = stats()
    assert type(info.value) is error, f"{name}: got {type(info.value).__name__}: {info.value}"
    for builtin in builtins:
        assert isinstance(info.value, builtin), f"{name}: not a {builtin.__name__}"
    assert after.published == before.published, f"{name}: a rejected call was counted"
    # stats(): "no_context and oversize count events refused before the queue"
    oversize = 1 if error is PayloadTooLargeError else 0
    moved = {r: after.dropped[r] - before.dropped.get(r, 0) for r in after.dropped}
    assert moved == {**dict.fromkeys(moved, 0), "oversize": oversize}, f"{name}: {moved}"
    assert after.queued <= before.queued, f"{name}: a rejected call was queued"
    assert len(str(info.value)) < 2_000, f"{name}: the error message carries the payload"


def test_bad_inputs_lose_nothing_already_queued(server: FaultProcess) -> None:
    """Good, bad, good, bad...: the server gets exactly the good ones, once each."""
    run = str(uuid.uuid4())
    good: list[int] = []
    seq = 0
    with bind(run, server=server.url):
        before = stats()

        def good_one(**kwargs: Any) -> None:
            nonlocal seq
            payload = dict(kwargs.pop("payload", {}))
            payload["seq"] = seq
            publish(payload, **kwargs)
            good.append(seq)
            seq += 1

        for _ in range(50):
            good_one()
        for name, kwargs, error, _ in BAD:
            with pytest.raises(error):
                publish(**kwargs)
            good_one(payload={"after": name})
        for _name, kwargs in GOOD_EDGE:
            good_one(**kwargs)
            good_one()
        assert flush(timeout=10.0), "flush() did not deliver the good events"
        after = stats()

    received = [e["event"] for e in server.accepted() if e["run"] == run]
    seqs = sorted(ev["payload"]["seq"] for ev in received)
    assert seqs == good, (
        f"missing {sorted(set(good) - set(seqs))[:10]}, "
        f"extra/dup {[s for s in seqs if seqs.count(s) > 1][:10]}"
    )
    assert after.published - before.published == len(good)
    assert after.sent - before.sent == len(good)
    moved = {r: after.dropped[r] - before.dropped.get(r, 0) for r in after.dropped}
    too_large = sum(1 for b in BAD if b[2] is PayloadTooLargeError)
    assert moved == {**dict.fromkeys(moved, 0), "oversize": too_large}, moved
    # the edge events arrive byte-exact
    by_seq = {ev["payload"]["seq"]: ev for ev in received}
    for name, kwargs in GOOD_EDGE:
        want = {k: v for k, v in kwargs["payload"].items() if k != "seq"}
        match = [
            ev
            for ev in by_seq.values()
            if {k: v for k, v in ev["payload"].items() if k != "seq"} == want
            and ev["kind"] == kwargs.get("kind", "event")
            and ev["index"] == kwargs.get("index")
            and ev["correlation_id"] == kwargs.get("correlation_id")
        ]
        assert match, f"{name} did not arrive intact"


# A bad setting in the environment is input too: the first `publish()` of a fresh process
# raises it in the caller's thread (the values themselves: tests/unit/test_settings.py).
SETTINGS_PROBE = """
import sys, uuid, zstream_mp as z
z.bind(str(uuid.uuid4()), server=sys.argv[1])
try:
    z.publish({"a": 1})
except z.ConfigurationError as exc:
    assert isinstance(exc, ValueError)
    print("error:", exc)
else:
    z.flush(5)
    print("ok", z.stats().sent)
"""


def _settings_probe(env: dict[str, str], server: FaultProcess) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ZSTREAM_", "ZENML_STREAM_"))}
    out = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE, server.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (ENV_BATCH_SIZE, "0"),
        (ENV_EXIT_TIMEOUT, "soon"),
        (ENV_IDLE_EXIT, "0"),
        (ENV_RETRY_DEADLINE, "nan?"),
    ],
)
def test_a_bad_setting_is_raised_by_the_first_publish(
    name: str, value: str, server: FaultProcess
) -> None:
    out = _settings_probe({name: value}, server)
    assert out.startswith(f"error: {name}="), out


@pytest.mark.parametrize("value", ["1", "1000"])
def test_batch_sizes_at_the_edges_deliver(value: str, server: FaultProcess) -> None:
    assert _settings_probe({ENV_BATCH_SIZE: value}, server) == "ok 1"
