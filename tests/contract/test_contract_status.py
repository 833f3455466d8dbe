"""Every status code of the two endpoints, on every target (ZenML 0.98.0 and ours).

The expected codes are ZenML's, observed on the real server; the error-body shapes are
checked separately so a wrong shape and a wrong code show up as different failures.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers.contract_envelope import ENVELOPE_MAX, event_with_envelope
from helpers.contract_sse import capture, frame_fields
from helpers.contract_targets import Registry, Target

RESERVED = ("end", "gap", "error", "cursor", "system")
UNKNOWN_RUN = "00000000-0000-4000-8000-00000000beef"


def ev(t: Target, **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "pipeline_run_id": t.run_id,
        "step_run_id": None,
        "step_name": "contract",
        "kind": "status",
        "correlation_id": None,
        "index": None,
        "payload": {},
    }
    e.update(kw)
    return e


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def raw_event(t: Target, tail: str) -> bytes:
    """A one-event body written by hand (for JSON that json.dumps cannot produce)."""
    return ('{"events":[{"pipeline_run_id":"' + t.run_id + '",' + tail + "}]}").encode()


def batch(*events: dict[str, Any]) -> bytes:
    return js({"events": list(events)})


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    status: int
    method: str = "POST"
    instance: str = "main"  # main | strict | disabled | down
    body: Callable[[Target], bytes] | None = None
    path: Callable[[Target], str] | None = None
    auth: str = "good"  # good | none | bad
    headers: Callable[[Target], dict[str, str]] | None = None
    shape: str | None = None  # JSON shape of the error body, as ZenML sends it
    retry_after: bool = False
    ours: int | None = None  # our status where the server differs from ZenML on purpose
    ours_shape: str | None = None

    def expected(self, target_name: str) -> tuple[int, str | None]:
        if self.ours is not None and target_name != "zenml":
            return self.ours, self.ours_shape
        return self.status, self.shape


def _bad_cursor(t: Target) -> str:
    return "12" if t.cursor_style == "redis" else "1-0"


CASES: list[Case] = [
    # ---- 200
    Case("200_post_one", 200, body=lambda t: batch(ev(t))),
    Case("200_post_empty_batch", 200, body=lambda t: js({"events": []})),
    Case(
        "200_post_minimal_event",
        200,
        body=lambda t: js({"events": [{"pipeline_run_id": t.run_id, "kind": "minimal"}]}),
    ),
    Case(
        "200_post_unknown_fields_ignored",
        200,
        body=lambda t: js({"events": [ev(t, extra_field="?")], "extra": 1}),
    ),
    Case("200_post_1000_events", 200, body=lambda t: batch(*[ev(t, index=i) for i in range(1000)])),
    Case(
        "200_post_envelope_69632",
        200,
        body=lambda t: batch(event_with_envelope(t.run_id, ENVELOPE_MAX)),
    ),
    Case(
        "200_post_envelope_69632_multibyte",
        200,
        body=lambda t: batch(event_with_envelope(t.run_id, ENVELOPE_MAX, multibyte=True)),
    ),
    Case(
        "200_post_run_id_uppercase_in_url",
        200,
        body=lambda t: batch(ev(t)),
        path=lambda t: t.events_path(t.run_id.upper()),
    ),
    Case(
        "200_post_nan_payload_value",
        200,
        body=lambda t: raw_event(t, '"kind":"nan","payload":{"x":NaN}'),
    ),
    Case(
        "200_get_stream",
        200,
        method="GET",
        path=lambda t: t.stream_path() + "?since=" + ("0-0" if t.cursor_style == "redis" else "0"),
    ),
    Case(
        "200_get_empty_last_event_id_header",
        200,
        method="GET",
        headers=lambda t: {"Last-Event-ID": ""},
    ),
    # ---- 400
    Case(
        "400_run_id_mismatch",
        400,
        body=lambda t: batch(ev(t, pipeline_run_id=str(uuid.uuid4()))),
        shape="detail:list",
    ),
    *[
        Case(
            f"400_reserved_kind_{k}",
            400,
            body=lambda t, k=k: batch(ev(t, kind=k)),
            shape="detail:list",
        )
        for k in RESERVED
    ],
    Case(
        "400_reserved_kind_in_second_event",
        400,
        body=lambda t: batch(ev(t), ev(t, kind="gap")),
        shape="detail:list",
    ),
    Case(
        "400_bad_cursor_since_abc",
        400,
        method="GET",
        path=lambda t: t.stream_path() + "?since=abc",
        shape="detail:list",
    ),
    Case(
        "400_bad_cursor_since_other_broker_form",
        400,
        method="GET",
        path=lambda t: t.stream_path() + "?since=" + _bad_cursor(t),
        shape="detail:list",
    ),
    Case(
        "400_bad_cursor_since_dollar",
        400,
        method="GET",
        path=lambda t: t.stream_path() + "?since=%24",
        shape="detail:list",
    ),
    Case(
        "400_bad_cursor_since_empty",
        400,
        method="GET",
        path=lambda t: t.stream_path() + "?since=",
        shape="detail:list",
    ),
    Case(
        "400_bad_cursor_last_event_id_abc",
        400,
        method="GET",
        headers=lambda t: {"Last-Event-ID": "abc"},
        shape="detail:list",
    ),
    Case(
        "400_bad_cursor_last_event_id_other_broker_form",
        400,
        method="GET",
        headers=lambda t: {"Last-Event-ID": _bad_cursor(t)},
        shape="detail:list",
    ),
    Case(
        "400_bad_cursor_header_wins_over_good_since",
        400,
        method="GET",
        path=lambda t: t.stream_path() + "?since=" + ("0-0" if t.cursor_style == "redis" else "0"),
        headers=lambda t: {"Last-Event-ID": "abc"},
        shape="detail:list",
    ),
    Case(
        "400_body_not_utf8",
        400,
        body=lambda t: (
            b'{"events":[{"pipeline_run_id":"' + t.run_id.encode() + b'","kind":"x\xff"}]}'
        ),
        shape="detail:str",
    ),
    # ---- deliberate differences (README "Where our server differs from ZenML on purpose")
    Case(
        "200_kind_with_lf_ours_400",
        200,
        body=lambda t: batch(ev(t, kind="bad\nkind")),
        ours=400,
        ours_shape="detail:list",
    ),
    Case(
        "200_kind_with_cr_ours_400",
        200,
        body=lambda t: batch(ev(t, kind="a\rb")),
        ours=400,
        ours_shape="detail:list",
    ),
    # ---- 401
    Case("401_post_no_token", 401, body=lambda t: batch(ev(t)), auth="none", shape="detail:str"),
    Case("401_post_bad_token", 401, body=lambda t: batch(ev(t)), auth="bad", shape="detail:list"),
    Case("401_get_no_token", 401, method="GET", auth="none", shape="detail:str"),
    Case("401_get_bad_token", 401, method="GET", auth="bad", shape="detail:list"),
    # ---- 404 (ours only with --strict-runs)
    Case(
        "404_post_unknown_run",
        404,
        instance="strict",
        body=lambda t: batch(ev(t, pipeline_run_id=UNKNOWN_RUN)),
        path=lambda t: t.events_path(UNKNOWN_RUN),
        shape="detail:list",
    ),
    Case(
        "404_get_unknown_run",
        404,
        method="GET",
        instance="strict",
        path=lambda t: t.stream_path(UNKNOWN_RUN),
        shape="detail:list",
    ),
    # ---- 413
    Case(
        "413_envelope_69633",
        413,
        body=lambda t: batch(event_with_envelope(t.run_id, ENVELOPE_MAX + 1)),
        shape="detail:str",
    ),
    Case(
        "413_envelope_69633_multibyte",
        413,
        body=lambda t: batch(event_with_envelope(t.run_id, ENVELOPE_MAX + 1, multibyte=True)),
        shape="detail:str",
    ),
    # ---- 422
    Case("422_body_not_json", 422, body=lambda t: b"not json", shape="list"),
    Case("422_body_empty", 422, body=lambda t: b"", shape="list"),
    Case("422_body_trailing_garbage", 422, body=lambda t: batch(ev(t)) + b" x", shape="list"),
    Case("422_body_is_list", 422, body=lambda t: b"[]", shape="list"),
    Case("422_events_missing", 422, body=lambda t: b"{}", shape="list"),
    Case("422_events_not_list", 422, body=lambda t: js({"events": {}}), shape="list"),
    Case("422_events_null", 422, body=lambda t: js({"events": None}), shape="list"),
    Case("422_event_not_object", 422, body=lambda t: js({"events": [None]}), shape="list"),
    Case(
        "422_bad_uuid_in_path_post",
        422,
        body=lambda t: batch(ev(t)),
        path=lambda t: "/api/v1/runs/not-a-uuid/events",
        shape="list",
    ),
    Case(
        "422_bad_uuid_in_path_get",
        422,
        method="GET",
        path=lambda t: "/api/v1/runs/not-a-uuid/events/stream",
        shape="list",
    ),
    Case(
        "422_bad_uuid_in_event",
        422,
        body=lambda t: batch(ev(t, pipeline_run_id="not-a-uuid")),
        shape="list",
    ),
    Case("422_bad_step_run_id", 422, body=lambda t: batch(ev(t, step_run_id="nope")), shape="list"),
    Case(
        "422_missing_kind",
        422,
        body=lambda t: js({"events": [{"pipeline_run_id": t.run_id}]}),
        shape="list",
    ),
    Case(
        "422_missing_pipeline_run_id",
        422,
        body=lambda t: js({"events": [{"kind": "x"}]}),
        shape="list",
    ),
    Case("422_kind_not_string", 422, body=lambda t: batch(ev(t, kind=5)), shape="list"),
    Case(
        "422_correlation_id_not_string",
        422,
        body=lambda t: batch(ev(t, correlation_id=5)),
        shape="list",
    ),
    Case("422_step_name_not_string", 422, body=lambda t: batch(ev(t, step_name=5)), shape="list"),
    Case("422_index_fractional", 422, body=lambda t: batch(ev(t, index=3.5)), shape="list"),
    Case("422_payload_not_object", 422, body=lambda t: batch(ev(t, payload=[1, 2])), shape="list"),
    Case("422_payload_null", 422, body=lambda t: batch(ev(t, payload=None)), shape="list"),
    Case(
        "422_1001_events",
        422,
        body=lambda t: batch(*[ev(t, index=i) for i in range(1001)]),
        shape="list",
    ),
    Case(
        "422_lone_surrogate",
        422,
        body=lambda t: raw_event(t, '"kind":"u","payload":{"s":"\\ud800"}'),
        shape="detail:list",
    ),
    Case(
        "422_form_encoded_body",
        422,
        body=lambda t: b"events=1",
        headers=lambda t: {"Content-Type": "application/x-www-form-urlencoded"},
        shape="list",
    ),
    # ---- 501
    Case(
        "501_post_disabled",
        501,
        instance="disabled",
        body=lambda t: batch(ev(t)),
        shape="detail:str",
    ),
    Case("501_get_disabled", 501, method="GET", instance="disabled", shape="detail:str"),
    Case(
        "501_before_422_when_disabled",
        501,
        instance="disabled",
        body=lambda t: b"{}",
        shape="detail:str",
    ),
    Case(
        "401_before_501_when_disabled",
        401,
        instance="disabled",
        body=lambda t: batch(ev(t)),
        auth="none",
        shape="detail:str",
    ),
    # ---- 503
    Case(
        "503_post_broker_down",
        503,
        instance="down",
        body=lambda t: batch(ev(t)),
        shape="detail:str",
        retry_after=True,
    ),
    Case(
        "503_get_broker_down",
        503,
        method="GET",
        instance="down",
        shape="detail:str",
        retry_after=True,
    ),
]
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES)


@dataclasses.dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes


def send(t: Target, case: Case) -> Result:
    headers: dict[str, str] = {}
    if case.auth == "good":
        headers.update(t.auth())
    elif case.auth == "bad":
        headers["Authorization"] = "Bearer not-a-valid-token"
    if case.headers:
        headers.update(case.headers(t))
    if case.method == "POST":
        path = case.path(t) if case.path else t.events_path()
        headers.setdefault("Content-Type", "application/json")
        body = case.body(t) if case.body else b""
        r = httpx.post(t.url + path, content=body, headers=headers, timeout=60)
        return Result(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
    path = case.path(t) if case.path else t.stream_path()
    cap = capture(t.url, path, headers, frames=1, timeout=30)
    return Result(cap.status, cap.headers, cap.body)


def run_case(registry: Registry, name: str, case: Case) -> Result:
    if case.instance == "main":
        return send(registry.main(name), case)
    if case.instance == "strict":
        return send(registry.strict(name), case)
    if case.instance == "disabled":
        return send(registry.disabled(name), case)
    with registry.down(name) as t:
        return send(t, case)


_down_results: dict[tuple[str, str], Result] = {}


def result_for(registry: Registry, name: str, case: Case) -> Result:
    """The broker-down cases share one outage per target (it is the slow part)."""
    if case.instance != "down":
        return run_case(registry, name, case)
    key = (name, case.id)
    if key not in _down_results:
        with registry.down(name) as t:
            for c in CASES:
                if c.instance == "down":
                    _down_results[(name, c.id)] = send(t, c)
    return _down_results[key]


def shape_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "empty" if not body else "not-json"
    if isinstance(data, list):
        return "list"
    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        kind = "list" if isinstance(detail, list) else "str" if isinstance(detail, str) else "?"
        return "detail:" + kind
    return "other"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_status(registry: Registry, target_name: str, case: Case) -> None:
    res = result_for(registry, target_name, case)
    status, _ = case.expected(target_name)
    assert res.status == status, (
        f"{case.id} on {target_name}: expected {status}, got {res.status}: {res.body[:300]!r}"
    )
    if case.retry_after:
        assert res.headers.get("retry-after") == "5", res.headers
    if status == 200 and case.method == "POST":
        data = json.loads(res.body)
        assert set(data) == {"count", "last_id"}, data
        n = len(json.loads(case.body(registry.main(target_name)))["events"]) if case.body else 0
        assert data["count"] == n
        assert (data["last_id"] is None) == (n == 0)
        assert data["last_id"] is None or isinstance(data["last_id"], str)
    if status == 200 and case.method == "GET":
        assert res.headers.get("content-type", "").startswith("text/event-stream"), res.headers


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.shape or c.ours_shape],
    ids=[c.id for c in CASES if c.shape or c.ours_shape],
)
def test_error_body_shape(registry: Registry, target_name: str, case: Case) -> None:
    res = result_for(registry, target_name, case)
    status, shape = case.expected(target_name)
    if shape is None:
        pytest.skip("no error body expected on this target")
    if res.status != status:
        pytest.skip(f"status differs ({res.status}); reported by test_status")
    assert shape_of(res.body) == shape, res.body[:300]


def next_event(t: Target, cursor: str) -> dict[str, str]:
    """The first non-gap frame after `cursor` (a gap can follow a broker restart)."""
    for n in (1, 2, 3, 4):
        cap = capture(t.url, t.stream_path() + f"?since={cursor}", t.auth(), frames=n)
        frames = [frame_fields(f) for f in cap.frames()]
        real = [f for f in frames if f.get("event") != "gap"]
        if real:
            return real[0]
    raise AssertionError(f"no event after {cursor}: {cap.body[:300]!r}")


def test_413_stores_nothing_of_the_batch(target: Target) -> None:
    """A batch with one oversize event is refused whole: its valid event never appears."""
    pre = target.post(batch(ev(target, kind="aon-pre")))
    assert pre.status_code == 200, pre.text
    cursor = pre.json()["last_id"]
    bad = target.post(
        batch(ev(target, kind="aon-valid"), event_with_envelope(target.run_id, ENVELOPE_MAX + 1))
    )
    assert bad.status_code == 413, bad.text
    post = target.post(batch(ev(target, kind="aon-sentinel")))
    assert post.status_code == 200, post.text
    fields = next_event(target, cursor)
    assert fields["event"] == "aon-sentinel", fields
    assert fields["id"] == post.json()["last_id"]


def test_400_and_422_store_nothing(target: Target) -> None:
    """Refused batches (reserved kind, mismatch, 1001 events) leave no trace in the stream."""
    pre = target.post(batch(ev(target, kind="rej-pre")))
    assert pre.status_code == 200, pre.text
    cursor = pre.json()["last_id"]
    assert target.post(batch(ev(target, kind="rej-a"), ev(target, kind="end"))).status_code == 400
    assert (
        target.post(
            batch(ev(target, kind="rej-b"), ev(target, pipeline_run_id=str(uuid.uuid4())))
        ).status_code
        == 400
    )
    assert target.post(batch(*[ev(target, kind="rej-c")] * 1001)).status_code == 422
    post = target.post(batch(ev(target, kind="rej-sentinel")))
    assert post.status_code == 200
    assert next_event(target, cursor)["event"] == "rej-sentinel"
