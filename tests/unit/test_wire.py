"""`_wire`: the Retry-After reader, ZenML's error detail, the URL builders."""

from __future__ import annotations

import math

import pytest

from zstream_mp import _wire


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        ("0", 0.0),
        ("0.25", 0.25),
        (" 3 ", 3.0),
        ("-4", 0.0),
        ("1e3", 1000.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # HTTP-dates are not read
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert _wire.parse_retry_after(header) == seconds


def test_parse_retry_after_infinity_is_kept_for_the_caller_to_cap() -> None:
    assert _wire.parse_retry_after("inf") == math.inf


@pytest.mark.parametrize(
    ("detail", "line"),
    [
        (["KeyError", "run not found"], "KeyError: run not found"),
        ("Not authenticated", "Not authenticated"),
        ([{"loc": ["body"], "msg": "bad"}], '[{"loc": ["body"], "msg": "bad"}]'),
        (["only one"], '["only one"]'),
        (None, "null"),
        (["a", 1], '["a", 1]'),
    ],
)
def test_describe_detail(detail: object, line: str) -> None:
    assert _wire.describe_detail(detail) == line


def test_error_detail_is_zenml_shape() -> None:
    assert _wire.error_detail("ValueError", "bad") == ["ValueError", "bad"]
    assert _wire.describe_detail(_wire.error_detail("ValueError", "bad")) == "ValueError: bad"


def test_urls() -> None:
    base = "http://127.0.0.1:8237"
    run = "00000000-0000-0000-0000-000000000001"
    assert _wire.events_url(base, run) == f"{base}/api/v1/runs/{run}/events"
    assert _wire.stream_url(base, run) == f"{base}/api/v1/runs/{run}/events/stream"
    assert _wire.runs_url(base) == f"{base}/api/v1/zstream/runs"
    assert _wire.run_url(base, run) == f"{base}/api/v1/zstream/runs/{run}"
    assert _wire.run_end_url(base, run) == f"{base}/api/v1/zstream/runs/{run}/end"
    assert _wire.bearer("t") == "Bearer t"


def test_limits_as_zenml_defines_them() -> None:
    assert _wire.PAYLOAD_BYTES_MAX == 65_536
    assert _wire.ENVELOPE_BYTES_MAX == 69_632
    assert len(b'{"type":"event","event":}') == _wire.ENVELOPE_OVERHEAD
    assert _wire.MAX_BATCH_SIZE == 1000
    assert _wire.DEFAULT_BATCH_SIZE == 64
    assert _wire.QUEUE_MAXSIZE == 4096


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"detail": ["KeyError", "no such run"]}', ["KeyError", "no such run"]),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"message": "other shape"}', {"message": "other shape"}),
        (b"[1, 2]", [1, 2]),
        (b"", None),
        (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
        (b"x" * 600, "x" * 500),
    ],
)
def test_detail_of_reads_any_error_body(body: bytes, detail: object) -> None:
    assert _wire.detail_of(body) == detail


def test_describe_failure_names_the_type_and_the_message() -> None:
    assert _wire.describe_failure(ConnectionError("refused")) == "ConnectionError: refused"
    assert _wire.describe_failure(TimeoutError()) == "TimeoutError"
