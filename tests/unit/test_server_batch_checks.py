"""`server.batch_checks`: a posted batch's checks beyond its model, each with ZenML's answer."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import Response

from zstream_mp._wire import ENVELOPE_BYTES_MAX, IDEMPOTENCY_KEY_MAX
from zstream_mp.server.batch_checks import (
    bad_idempotency_key,
    encoded_events,
    may_hold_lone_surrogates,
)
from zstream_mp.server.models import StreamBatchRequest

RUN = uuid.uuid4()


def _batch(*events: dict[str, object]) -> StreamBatchRequest:
    return StreamBatchRequest.model_validate(
        {"events": [{"pipeline_run_id": str(RUN), "kind": "log", **e} for e in events]}
    )


def _refusal(result: list[bytes] | Response) -> tuple[int, object]:
    assert isinstance(result, Response)
    return result.status_code, json.loads(bytes(result.body))["detail"]


def test_a_good_batch_comes_back_encoded_once_per_event() -> None:
    frames = encoded_events(_batch({"payload": {"i": 1}}, {"payload": {"i": 2}}), RUN)
    assert isinstance(frames, list) and len(frames) == 2
    assert all(f.startswith(b'{"type":"event"') for f in frames)


def test_an_event_of_another_run_is_a_400() -> None:
    other = str(uuid.uuid4())
    status, detail = _refusal(encoded_events(_batch({"pipeline_run_id": other}), RUN))
    assert status == 400 and detail[0] == "ValueError" and other in detail[1]


@pytest.mark.parametrize("kind", ["end", "gap", "two\nlines"])
def test_a_kind_sse_cannot_carry_is_a_400(kind: str) -> None:
    status, _ = _refusal(encoded_events(_batch({"kind": kind}), RUN))
    assert status == 400


def test_a_lone_surrogate_in_a_key_is_a_422() -> None:
    status, detail = _refusal(encoded_events(_batch({"payload": {"\ud800": 1}}), RUN))
    assert status == 422 and "surrogate" in detail[1]


def test_an_event_over_the_envelope_is_a_413() -> None:
    status, detail = _refusal(
        encoded_events(_batch({"payload": {"x": "y" * ENVELOPE_BYTES_MAX}}), RUN)
    )
    assert status == 413 and str(ENVELOPE_BYTES_MAX) in detail


def test_idempotency_keys() -> None:
    assert bad_idempotency_key("a" * IDEMPOTENCY_KEY_MAX) is None
    assert bad_idempotency_key("a" * (IDEMPOTENCY_KEY_MAX + 1)) is not None
    assert bad_idempotency_key("caf\u00e9") is not None


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _holds_lone_surrogate(value: object) -> bool:
    texts: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(k)
                walk(item)

    walk(value)
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@settings(max_examples=300, deadline=None)
@given(value=_json_values, ascii_only=st.booleans())
def test_a_body_that_may_not_hold_a_lone_surrogate_parses_to_none(
    value: object, ascii_only: bool
) -> None:
    """The body scan never says no where `json.loads` would produce a lone surrogate (from
    a `\\uD800` escape or from the surrogate's own bytes)."""
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if _holds_lone_surrogate(json.loads(raw)):
        assert may_hold_lone_surrogates(raw)


def test_the_body_scan_answers_no_for_plain_text() -> None:
    assert not may_hold_lone_surrogates(json.dumps({"a": "é中 \\u00e9"}).encode())
    assert may_hold_lone_surrogates(b'{"a":"\\uDC00"}')


def test_a_clean_body_skips_the_per_event_scan_and_encodes_alike() -> None:
    batch = _batch({"payload": {"i": 1, "t": "é"}}, {"payload": {"f": 1e20}})
    assert encoded_events(batch, RUN, surrogates=False) == encoded_events(batch, RUN)
