"""One scripted session of posts and subscriptions, replayed identically on every target.

Bodies are templates: `@RUN@` and `@STEP_RUN@` become the target's run and step run
ids. Some are written by hand because `json.dumps` cannot produce them (`1e20`,
`NaN`, duplicate keys). Every subscription starts from a cursor taken during the script,
so the captured bytes do not depend on what else the run holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from helpers.contract_sse import Capture, capture

SENTINEL = "zz-sentinel"


def _ev(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "pipeline_run_id": "@RUN@",
        "step_run_id": None,
        "step_name": None,
        "kind": "event",
        "correlation_id": None,
        "index": None,
        "payload": {},
    }
    e.update(kw)
    return e


def _body(*events: dict[str, Any], ascii_only: bool = True) -> str:
    """Like the real producer (requests' json=): default separators, ASCII escapes."""
    return json.dumps({"events": list(events)}, ensure_ascii=ascii_only)


def _raw(*tails: str) -> str:
    return '{"events":[' + ",".join('{"pipeline_run_id":"@RUN@",' + t + "}" for t in tails) + "]}"


UNICODE = {
    "text": "héllo ✓",
    "emoji": "😀🎉",
    "cjk": "日本語",
    "rtl": "עברית",
    "esc": 'quote" back\\ slash/ tab\t nl\n cr\r',
    "ctl": "\u0000\u0001\u001f\u007f",
    "seps": "\u2028\u2029",
    "bom": "\ufeff",
    "combining": "e\u0301",
}

BATCHES: list[tuple[str, str]] = [
    ("marker", _raw('"kind":"marker"')),
    (
        "producer_like",
        _body(
            *[
                _ev(
                    step_run_id="@STEP_RUN@",
                    step_name="streamer",
                    kind="token",
                    correlation_id="chat-A",
                    index=i,
                    payload={"token": f"tok-{i}", "text": "héllo ✓"},
                )
                for i in range(3)
            ],
            _ev(
                step_run_id="@STEP_RUN@",
                step_name="streamer",
                kind="progress",
                correlation_id="job-B",
                payload={"progress": 0.5},
            ),
            _ev(
                step_run_id="@STEP_RUN@",
                step_name="streamer",
                kind="progress",
                correlation_id="job-B",
                index=1,
                payload={"progress": 1.0, "nested": {"a": [1, 2, None]}},
            ),
            _ev(step_run_id="@STEP_RUN@", step_name="streamer", payload={"msg": "no correlation"}),
        ),
    ),
    (
        "unicode_escaped",
        _body(_ev(kind="tøken", step_name="步骤", correlation_id="corr-é", payload=UNICODE)),
    ),
    (
        "unicode_raw",
        _body(
            _ev(kind="tøken", step_name="步骤", correlation_id="corr-é", payload=UNICODE),
            ascii_only=False,
        ),
    ),
    (
        "nested",
        _body(
            _ev(
                kind="nested",
                payload={
                    "a": {"b": {"c": [1, [2, [3, {"d": None}]]]}},
                    "empty_obj": {},
                    "empty_list": [],
                    "bools": [True, False],
                    "z": 1,
                    "y": 2,
                    "1": "numeric key",
                    "": "empty key",
                    "deep": json.loads("[" * 40 + "0" + "]" * 40),
                    "str_list": ["a", "", " "],
                },
            )
        ),
    ),
    ("rejected_reserved", _body(_ev(kind="never-stored"), _ev(kind="end"))),
    (
        "floats",
        _raw(
            '"kind":"floats","payload":{"a":1.0,"b":1e20,"c":0.1,"d":-0.0,"e":1.5e-7,'
            '"f":1E+3,"g":1e16,"h":5e-324,"i":1.7976931348623157e308,'
            '"j":123456789.123456789,"k":100.0,"l":1e15,"m":2.5e-5,"n":0.0001,"o":1e-5,'
            '"p":-2.5,"q":3.0e0,"r":0.30000000000000004,"s":1e-7,"t":12345678.9}'
        ),
    ),
    (
        "nonfinite",
        _raw(
            '"kind":"floats","payload":{"nan":NaN,"inf":Infinity,"ninf":-Infinity,'
            '"big":1e400,"nbig":-1e400}'
        ),
    ),
    (
        "bigints",
        _raw(
            '"kind":"ints","index":9223372036854775808,"payload":{'
            '"a":9007199254740993,"b":9223372036854775807,"c":9223372036854775808,'
            '"d":18446744073709551616,"e":-9223372036854775809,'
            '"f":123456789012345678901234567890,"g":-0,"h":0}'
        ),
    ),
    ("nulls_explicit", _body(_ev(kind="nulls"))),
    ("payload_omitted", _raw('"kind":"nulls","step_run_id":null')),
    ("minimal", _raw('"kind":"minimal"')),
    (
        "extra_fields",
        '{"events":[{"pipeline_run_id":"@RUN@","kind":"extra","x":1,'
        '"payload":{"k":"v"},"nested_extra":{"a":1}}],"batch_extra":true}',
    ),
    (
        "uuid_forms",
        _raw(
            '"kind":"uuid","step_run_id":"ABCDEF01-2345-6789-ABCD-EF0123456789"',
            '"kind":"uuid","step_run_id":"abcdef0123456789abcdef0123456789"',
            '"kind":"uuid","step_run_id":"urn:uuid:abcdef01-2345-6789-abcd-ef0123456789"',
            '"kind":"uuid","step_run_id":"{abcdef01-2345-6789-abcd-ef0123456789}"',
        ),
    ),
    (
        "index_coercion",
        _raw(
            '"kind":"index","index":"7"',
            '"kind":"index","index":3.0',
            '"kind":"index","index":true',
            '"kind":"index","index":-5',
            '"kind":"index","index":0',
        ),
    ),
    ("duplicate_keys", _raw('"kind":"dup","payload":{"a":1,"b":2,"a":3}')),
    (
        "unsafe_kinds",  # CR/LF kinds are refused by our server (400): see test_contract_status
        _body(
            _ev(kind=""),
            _ev(kind="a: b"),
            _ev(kind="End"),
            _ev(kind=" end"),
            _ev(kind="k" * 300),
            _ev(kind="ok-after-unsafe"),
        ),
    ),
    (
        "filter_mix",
        _body(
            *[
                _ev(kind=k, correlation_id=c, step_name=s, index=i)
                for i, (k, c, s) in enumerate(
                    [
                        ("token", "chat-A", "streamer"),
                        ("token", "chat-B", "streamer"),
                        ("progress", "job-B", "other"),
                        ("progress", None, None),
                        ("event", "chat-A", None),
                        ("token", None, "other"),
                        ("token,progress", "chat-A", "streamer"),
                    ]
                )
            ]
        ),
    ),
    ("sentinel", _raw(f'"kind":"{SENTINEL}"')),
]
BATCH_NAMES = [n for n, _ in BATCHES]


@dataclasses.dataclass(frozen=True)
class Sub:
    """A subscription: query and headers, its cursor (a batch name), how to read it."""

    name: str
    query: str = ""
    cursor: str | None = "marker"  # since=<last_id of that batch>; None: no cursor
    header_cursor: str | None = None  # Last-Event-ID=<last_id of that batch> ("" = empty)
    phase: str = "replay"  # live | replay | after_end


SUBS: list[Sub] = [
    Sub("live_all", phase="live"),
    Sub("replay_since"),
    Sub("replay_last_event_id", cursor=None, header_cursor="marker"),
    Sub("header_wins_over_since", cursor="nested", header_cursor="marker"),
    Sub("empty_header_uses_since", cursor="nested", header_cursor=""),
    Sub("resume_after_floats", cursor="floats"),
    Sub("resume_after_bigints_header", cursor=None, header_cursor="bigints"),
    Sub("filter_kinds_token", "kinds=token"),
    Sub("filter_kinds_two", "kinds=token&kinds=progress"),
    Sub("filter_correlation", "correlation_ids=chat-A"),
    Sub("filter_step_names", "step_names=streamer"),
    Sub("filter_and", "kinds=progress&correlation_ids=job-B"),
    Sub("filter_all_three", "kinds=token&step_names=streamer&correlation_ids=chat-A"),
    Sub("filter_comma_not_split", "kinds=" + quote("token,progress")),
    Sub("filter_empty_kind", "kinds="),
    Sub("filter_unicode", "kinds=" + quote("tøken") + "&step_names=" + quote("步骤")),
    Sub("filter_no_match", "kinds=nothing-matches"),
    Sub("filter_resume", "kinds=token", cursor="unsafe_kinds"),
    Sub("after_end_replay_all", cursor=None, phase="after_end"),
    Sub("after_end_since_sentinel", cursor="sentinel", phase="after_end"),
    Sub("after_end_filtered", "kinds=token", cursor="marker", phase="after_end"),
]


def scenario_hash() -> str:
    """Changes whenever the script changes, so stale golden files are detected."""
    text = json.dumps([BATCHES, [dataclasses.astuple(s) for s in SUBS]], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Recording:
    """Everything one target answered to the script."""

    statuses: dict[str, tuple[int, int | None]]  # batch -> (status, count)
    last_ids: dict[str, str]
    captures: dict[str, Capture]


def exercise(
    url: str,
    token: str | None,
    run_id: str,
    step_run_id: str,
    finish: Callable[[], None],
    *,
    end_timeout: float = 20.0,
) -> Recording:
    """Post every batch, capture every subscription, finish the run, capture the rest."""
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    stream = f"/api/v1/runs/{run_id}/events/stream"
    statuses: dict[str, tuple[int, int | None]] = {}
    last_ids: dict[str, str] = {}
    counts: list[tuple[str, int]] = []
    captures: dict[str, Capture] = {}
    live: list[Capture] = []
    live_thread: threading.Thread | None = None
    with httpx.Client(
        base_url=url, headers={**auth, "Content-Type": "application/json"}, timeout=30
    ) as client:
        for name, template in BATCHES:
            body = template.replace("@RUN@", run_id).replace("@STEP_RUN@", step_run_id)
            r = client.post(f"/api/v1/runs/{run_id}/events", content=body.encode())
            count = r.json().get("count") if r.status_code == 200 else None
            statuses[name] = (r.status_code, count)
            if r.status_code == 200 and count:
                last_ids[name] = r.json()["last_id"]
                counts.append((name, count))
            if name == "marker":
                path = f"{stream}?since={last_ids['marker']}"
                live_thread = threading.Thread(
                    target=lambda p=path: live.append(
                        capture(url, p, auth, until=f"event: {SENTINEL}\n".encode(), timeout=30)
                    )
                )
                live_thread.start()
                time.sleep(0.5)
    assert live_thread is not None
    live_thread.join(35)
    captures["live_all"] = live[0] if live else Capture(0, {}, b"", "timeout")

    def after(batch: str | None) -> int:
        if batch is None:
            return sum(c for _, c in counts)
        names = [n for n, _ in counts]
        return sum(c for _, c in counts[names.index(batch) + 1 :]) if batch in names else 0

    def path_and_headers(sub: Sub) -> tuple[str, dict[str, str]]:
        params = [sub.query] if sub.query else []
        if sub.cursor is not None:
            params.append(f"since={last_ids.get(sub.cursor, 'missing')}")
        headers = dict(auth)
        if sub.header_cursor is not None:
            headers["Last-Event-ID"] = (
                last_ids.get(sub.header_cursor, "") if sub.header_cursor else ""
            )
        return stream + ("?" + "&".join(params) if params else ""), headers

    for sub in SUBS:
        if sub.phase != "replay":
            continue
        path, headers = path_and_headers(sub)
        effective = sub.header_cursor or sub.cursor
        captures[sub.name] = capture(url, path, headers, frames=after(effective), timeout=15)
    finish()
    for sub in SUBS:
        if sub.phase == "after_end":
            path, headers = path_and_headers(sub)
            captures[sub.name] = capture(url, path, headers, timeout=end_timeout)
    return Recording(statuses, last_ids, captures)
