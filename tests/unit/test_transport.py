"""`_transport.Transport`'s status policy against `httpx.MockTransport`.

What each status class means for a batch, Retry-After, one Idempotency-Key across the
retries of a batch, and the one credentials refresh after a 401. The real-network side
(fault servers that drop, reset and stall) is in tests/test_faults.py.

The mock is handed to the transport through its `http_transport` argument (passed on to
`httpx.Client(transport=...)`, so the client keeps its own headers and timeouts); these
tests skip until the transport has that seam.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from zstream_mp import _transport
from zstream_mp._transport import Outcome, Result, Transport
from zstream_mp._version import __version__

SERVER = "http://127.0.0.1:9"
RUN = str(uuid.uuid4())
BODY = b'{"events":[{"pipeline_run_id":"x","kind":"k"}]}'

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Answers from a script of responses (the last one repeats) and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make(
    recorder: Recorder,
    *,
    retry_deadline: float = 5.0,
    refresh: Callable[[str], str | None] | None = None,
) -> Transport:
    kwargs: dict[str, Any] = {"http_transport": httpx.MockTransport(recorder)}
    return Transport(1.0, retry_deadline, refresh, **kwargs)


def post(t: Transport, token: str | None = "tok", give_up_in: float = 60.0) -> Result:
    give_up_at = time.monotonic() + give_up_in
    return t.post(SERVER, RUN, token, BODY, lambda: give_up_at)


def status(code: int, **kw: Any) -> httpx.Response:
    return httpx.Response(code, **kw)


@pytest.mark.parametrize("code", [200, 201, 202, 204])
def test_2xx_is_delivered(code: int) -> None:
    rec = Recorder(status(code))
    result = post(make(rec))
    assert (result.outcome, result.attempts, result.status) == (Outcome.DELIVERED, 1, code)


def test_the_request_is_the_contract() -> None:
    rec = Recorder(status(200))
    post(make(rec))
    (request,) = rec.requests
    assert request.method == "POST"
    assert str(request.url) == f"{SERVER}/api/v1/runs/{RUN}/events"
    assert request.content == BODY
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"zstream-mp/{__version__}"
    uuid.UUID(request.headers["Idempotency-Key"])


def test_no_token_no_authorization_header() -> None:
    rec = Recorder(status(200))
    post(make(rec), token=None)
    assert "Authorization" not in rec.requests[0].headers


@pytest.mark.parametrize("code", [400, 403, 404, 413, 422, 418])
def test_4xx_is_rejected_at_once(code: int) -> None:
    rec = Recorder(status(code, json={"detail": ["ValueError", "no"]}))
    result = post(make(rec))
    assert (result.outcome, result.attempts) == (Outcome.REJECTED, 1)
    assert result.reason.startswith(f"HTTP {code}")


def test_the_reason_names_zenmls_detail_but_never_echoes_a_422() -> None:
    rec = Recorder(status(404, json={"detail": ["KeyError", "run not found"]}))
    assert post(make(rec)).reason == "HTTP 404 KeyError: run not found"
    echo = {"detail": [{"loc": ["body"], "input": "SECRET-PAYLOAD"}]}
    reason = post(make(Recorder(status(422, json=echo)))).reason
    assert "SECRET" not in reason and reason.startswith("HTTP 422")


@pytest.mark.parametrize("code", [405, 501])
def test_no_streaming_mutes(code: int) -> None:
    result = post(make(Recorder(status(code))))
    assert (result.outcome, result.attempts) == (Outcome.MUTED, 1)


@pytest.mark.parametrize("code", [500, 505])
def test_other_5xx_fail_without_retry(code: int) -> None:
    result = post(make(Recorder(status(code))))
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 1)


@pytest.mark.parametrize("code", [429, 502, 503, 504])
def test_retryable_statuses_are_retried_with_the_same_idempotency_key(code: int) -> None:
    rec = Recorder(status(code), status(code), status(200))
    result = post(make(rec))
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 3)
    keys = {r.headers["Idempotency-Key"] for r in rec.requests}
    assert len(keys) == 1


def test_each_batch_gets_its_own_idempotency_key() -> None:
    rec = Recorder(status(200))
    t = make(rec)
    post(t)
    post(t)
    assert rec.requests[0].headers["Idempotency-Key"] != rec.requests[1].headers["Idempotency-Key"]


def test_connection_errors_are_retried() -> None:
    rec = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), status(200))
    result = post(make(rec))
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 3)


def test_retry_after_is_honoured() -> None:
    rec = Recorder(status(503, headers={"Retry-After": "0.4"}), status(200))
    result = post(make(rec))
    assert result.outcome is Outcome.DELIVERED
    assert rec.times[1] - rec.times[0] >= 0.38


def test_retries_stop_at_the_retry_deadline() -> None:
    rec = Recorder(status(503))
    started = time.monotonic()
    result = post(make(rec, retry_deadline=0.3))
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.FAILED and result.status == 503
    assert result.attempts >= 2
    assert elapsed < 0.3 + 1.0


def test_a_long_retry_after_does_not_outlive_the_callers_deadline() -> None:
    rec = Recorder(status(503, headers={"Retry-After": "30"}))
    started = time.monotonic()
    result = post(make(rec), give_up_in=0.3)
    assert result.outcome is Outcome.FAILED
    assert time.monotonic() - started < 0.3 + 1.0


def test_401_refreshes_credentials_once_and_remembers_them() -> None:
    calls: list[str] = []

    def refresh(server: str) -> str:
        calls.append(server)
        return "fresh"

    def answer(request: httpx.Request) -> httpx.Response:
        ok = request.headers.get("Authorization") == "Bearer fresh"
        return status(200 if ok else 401)

    kwargs: dict[str, Any] = {"http_transport": httpx.MockTransport(answer)}
    t = Transport(1.0, 5.0, refresh, **kwargs)
    result = post(t, token="stale")
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 2)
    assert calls == [SERVER]
    assert post(t, token="stale").attempts == 1  # the fresh token is used from now on
    assert calls == [SERVER]


def test_a_second_401_is_rejected_without_another_refresh() -> None:
    calls: list[str] = []

    def refresh(server: str) -> str:
        calls.append(server)
        return f"fresh-{len(calls)}"

    rec = Recorder(status(401))
    result = post(make(rec, refresh=refresh))
    assert (result.outcome, result.attempts, result.status) == (Outcome.REJECTED, 2, 401)
    assert len(calls) == 1


def test_401_without_a_new_token_is_rejected_at_once() -> None:
    result = post(make(Recorder(status(401)), refresh=lambda server: None))
    assert (result.outcome, result.attempts) == (Outcome.REJECTED, 1)
    result = post(make(Recorder(status(401))))
    assert (result.outcome, result.attempts) == (Outcome.REJECTED, 1)


def test_policy_tables() -> None:
    assert frozenset({429, 502, 503, 504}) == _transport.RETRY_STATUSES
    assert frozenset({405, 501}) == _transport.MUTE_STATUSES
