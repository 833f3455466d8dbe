"""`_quiet`: the sender's own httpx/httpcore records are dropped; everyone else's log."""

from __future__ import annotations

import logging
import threading

import pytest

from zstream_mp import _quiet


@pytest.fixture(autouse=True)
def _capture_httpx(caplog: pytest.LogCaptureFixture) -> None:
    _quiet.install()
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore.http11")


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_records_inside_requests_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with _quiet.requests():
        logging.getLogger("httpx").info("HTTP Request: POST sender")
        logging.getLogger("httpcore.http11").debug("send_request_headers sender")
    assert _messages(caplog) == []


def test_records_outside_requests_still_log(caplog: pytest.LogCaptureFixture) -> None:
    with _quiet.requests():
        pass
    logging.getLogger("httpx").info("HTTP Request: GET user")
    assert _messages(caplog) == ["HTTP Request: GET user"]


def test_another_threads_requests_log_while_the_sender_is_inside(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inside = threading.Event()
    leave = threading.Event()

    def sender() -> None:
        with _quiet.requests():
            inside.set()
            leave.wait(10)
            logging.getLogger("httpx").info("sender's own")

    thread = threading.Thread(target=sender)
    thread.start()
    assert inside.wait(10)
    logging.getLogger("httpx").info("the user's request")
    leave.set()
    thread.join(10)
    assert _messages(caplog) == ["the user's request"]


def test_other_loggers_are_never_filtered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="myapp")
    with _quiet.requests():
        logging.getLogger("myapp").info("mine")
    assert _messages(caplog) == ["mine"]


def test_install_is_idempotent() -> None:
    _quiet.install()
    _quiet.install()
    for name in _quiet.LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(1 for f in filters if type(f).__module__ == _quiet.__name__) == 1


def test_an_exception_inside_requests_leaves_logging_on(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError), _quiet.requests():
        raise RuntimeError("boom")
    logging.getLogger("httpx").info("after")
    assert _messages(caplog) == ["after"]
