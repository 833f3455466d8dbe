"""`_health.DeliveryHealth`: one warning when delivery starts failing, few while it goes on,
one line when it recovers; retries counted as they happen; the last failure kept."""

from __future__ import annotations

import logging

import pytest

from zstream_mp import _health
from zstream_mp._health import DeliveryHealth
from zstream_mp._queue import EventQueue

SERVER = "http://127.0.0.1:9"
OTHER = "http://127.0.0.1:10"


@pytest.fixture
def queue() -> EventQueue:
    return EventQueue(100)


@pytest.fixture
def caplog_zstream(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="zstream_mp")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def test_the_first_failure_warns_once_naming_server_and_reason(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture
) -> None:
    health = DeliveryHealth(queue)
    health.attempt_failed(SERVER, "connection refused", will_retry=True)
    health.attempt_failed(SERVER, "connection refused", will_retry=True)
    (line,) = _lines(caplog_zstream, logging.WARNING)
    assert SERVER in line and "connection refused" in line and "retrying" in line


def test_a_failure_not_retried_says_the_batch_is_given_up(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture
) -> None:
    DeliveryHealth(queue).attempt_failed(SERVER, "HTTP 422", will_retry=False)
    (line,) = _lines(caplog_zstream, logging.WARNING)
    assert "giving up on this batch" in line


def test_retries_are_counted_as_they_happen(queue: EventQueue) -> None:
    health = DeliveryHealth(queue)
    health.attempt_failed(SERVER, "503", will_retry=True)
    health.attempt_failed(SERVER, "503", will_retry=True)
    health.attempt_failed(SERVER, "400", will_retry=False)
    assert queue.snapshot(0, None).retries == 2


def test_a_failure_that_goes_on_is_said_again_after_the_repeat_interval(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = DeliveryHealth(queue)
    health.attempt_failed(SERVER, "503", will_retry=True)
    monkeypatch.setattr(_health, "REPEAT_SECONDS", 0.0)
    health.attempt_failed(SERVER, "503", will_retry=True)
    _first, again = _lines(caplog_zstream, logging.WARNING)
    assert "still failing after 2 attempts" in again and SERVER in again


def test_recovery_is_said_once_with_the_attempts(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture
) -> None:
    health = DeliveryHealth(queue)
    health.attempt_failed(SERVER, "503", will_retry=True)
    health.attempt_failed(SERVER, "503", will_retry=True)
    health.delivered(SERVER)
    health.delivered(SERVER)
    recovered = [line for line in _lines(caplog_zstream) if "recovered" in line]
    assert len(recovered) == 1 and "after 2 failed attempts" in recovered[0]


def test_a_delivery_that_never_failed_logs_nothing(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture
) -> None:
    DeliveryHealth(queue).delivered(SERVER)
    assert _lines(caplog_zstream, logging.DEBUG) == []


def test_servers_fail_and_recover_independently(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture
) -> None:
    health = DeliveryHealth(queue)
    health.attempt_failed(SERVER, "503", will_retry=True)
    health.attempt_failed(OTHER, "timeout", will_retry=True)
    health.delivered(OTHER)
    warnings = _lines(caplog_zstream, logging.WARNING)
    assert len(warnings) == 2
    (recovered,) = [line for line in _lines(caplog_zstream) if "recovered" in line]
    assert OTHER in recovered and SERVER not in recovered
    caplog_zstream.clear()
    health.attempt_failed(SERVER, "503", will_retry=True)  # still failing: no new first line
    assert _lines(caplog_zstream, logging.WARNING) == []


def test_the_last_failure_is_kept_for_stats_and_flush(queue: EventQueue) -> None:
    health = DeliveryHealth(queue)
    before = health.last_failure
    assert before is None
    health.attempt_failed(SERVER, "HTTP 503", will_retry=True)
    assert health.last_failure == f"{SERVER}: HTTP 503"
    health.delivered(SERVER)
    assert health.last_failure == f"{SERVER}: HTTP 503"  # kept: stats() still shows it


def test_a_drop_warns_once_per_key_then_at_debug(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture
) -> None:
    health = DeliveryHealth(queue)
    health.dropped("oversize", "dropped %d events: %s", 3, "too large")
    health.dropped("oversize", "dropped %d events: %s", 4, "too large")
    health.dropped(("rejected", SERVER), "rejected by %s", SERVER)
    levels = [(r.levelno, r.getMessage()) for r in caplog_zstream.records]
    assert levels == [
        (logging.WARNING, "dropped 3 events: too large"),
        (logging.DEBUG, "dropped 4 events: too large"),
        (logging.WARNING, f"rejected by {SERVER}"),
    ]
    assert health.last_failure == f"rejected by {SERVER}"


def test_a_drop_message_without_arguments_is_kept_verbatim(queue: EventQueue) -> None:
    health = DeliveryHealth(queue)
    health.dropped("k", "100% of the batch was refused")
    assert health.last_failure == "100% of the batch was refused"


def test_a_drop_is_said_again_after_the_repeat_interval(
    queue: EventQueue, caplog_zstream: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = DeliveryHealth(queue)
    monkeypatch.setattr(_health, "REPEAT_SECONDS", 0.0)
    health.dropped("k", "first")
    health.dropped("k", "second")
    assert len(_lines(caplog_zstream, logging.WARNING)) == 2
