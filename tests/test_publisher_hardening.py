"""The publisher's side of the hardening review: deadlines that hold, tokens that stay home,
counts that add up, and failures a user can see. Each case is a real publisher process
against a real fault server on loopback (tests/helpers/faultserver.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers.faultserver import FaultProcess
from helpers.targets import child_env
from test_faults import assert_exactly_once, delivered, run_client

import zstream_mp


@pytest.fixture
def run_id() -> str:
    return str(uuid.uuid4())


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_trickling_server_cannot_hold_a_batch_past_its_deadline(
    tmp_path: Path, run_id: str
) -> None:
    """One byte a second never trips a per-read timeout; the batch's deadline holds anyway."""
    deadline = 2.0
    with FaultProcess(tmp_path) as fp:
        fp.set_script([{"action": "trickle", "interval": 0.5}])
        res = run_client(
            fp.url,
            run_id,
            [{"publish": 1}, {"flush": 10}],  # one batch: its own deadline is what is measured
            env={"ZSTREAM_RETRY_DEADLINE": str(deadline)},
        )
    flush = res.report["flushes"][0]
    # The batch is given up at its deadline (within 10%), not after the server is done.
    assert flush["elapsed"] <= deadline * 1.1 + 0.1, flush
    assert res.final("dropped")["failed"] == 1
    assert res.final("sent") + res.final("dropped")["failed"] == res.final("published")


def test_zstream_token_is_not_sent_to_a_server_it_was_not_given_for(
    tmp_path: Path, run_id: str
) -> None:
    """ZSTREAM_TOKEN belongs to ZSTREAM_SERVER: a bound third-party server never sees it,
    neither on the first try nor as the retry credential after a 401."""
    with FaultProcess(tmp_path) as fp:
        res = run_client(
            fp.url,
            run_id,
            [{"publish": 5}, {"flush": 5}],
            env={"ZSTREAM_TOKEN": "env-secret"},
        )
        assert res.final("sent") == 5
        auth = [r["headers"].get("authorization") for r in fp.requests()]
        assert auth and all(a is None for a in auth), auth
    with FaultProcess(tmp_path / "b", token="env-secret") as fp:
        res = run_client(
            fp.url,
            run_id,
            [{"publish": 5}, {"flush": 5}],
            token="bound-token",
            env={"ZSTREAM_TOKEN": "env-secret"},
        )
        auth = [r["headers"].get("authorization") for r in fp.requests()]
        assert auth and set(auth) == {"Bearer bound-token"}, auth  # no retry with env-secret
        assert res.final("spooled") == 5  # kept for an attempt with valid credentials
        assert sum(res.final("dropped").values()) == 0


def test_a_wrong_server_is_reported_within_a_second_naming_it(tmp_path: Path, run_id: str) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    res = run_client(
        url,
        run_id,
        [{"publish": 10}, {"sleep": 1.0}, {"stats": "after_1s"}, {"flush": 1.0}],
    )
    first = res.report["warned_at"][0]
    assert first < 1.0, res.report["warned_at"]
    failing = [w for w in res.warnings if "failing" in w]
    assert len(failing) == 1 and url in failing[0], res.warnings
    assert res.report["stats"]["after_1s"]["retries"] > 0, "retries must count while it fails"
    assert url in (res.report["stats"]["after_1s"]["last_failure"] or "")
    assert res.report["flushes"] == [res.report["flushes"][0]]
    assert res.report["flushes"][0]["ok"] is False
    gave_up = [w for w in res.warnings if "flush() gave up" in w]
    assert len(gave_up) == 1 and url in gave_up[0], res.warnings


def test_recovery_is_said_once(tmp_path: Path, run_id: str) -> None:
    with FaultProcess(tmp_path) as fp:
        fp.set_script([{"status": 503, "count": 3}])
        res = run_client(fp.url, run_id, [{"publish": 20}, {"flush": 10}])
        assert_exactly_once(delivered(fp, run_id), set(range(20)))
    assert len([w for w in res.warnings if "is failing" in w]) == 1, res.warnings
    assert res.final("retries") == 3


def test_malformed_zstream_server_is_a_clear_error_where_it_is_read() -> None:
    code = (
        "import os, zstream_mp\n"
        "os.environ['ZSTREAM_SERVER'] = 'localhost:8237'\n"
        "try:\n"
        "    zstream_mp.bind('7a9e2f6c-1b3d-4c5e-8f70-0123456789ab')\n"
        "except zstream_mp.ConfigurationError as exc:\n"
        "    print('ERR', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=child_env(sys.executable),
        timeout=60,
    )
    assert out.stdout.startswith("ERR"), out.stdout + out.stderr
    assert "ZSTREAM_SERVER" in out.stdout and "http://" in out.stdout


def test_tokens_never_in_repr() -> None:
    ctx = zstream_mp.StreamContext(
        "7a9e2f6c-1b3d-4c5e-8f70-0123456789ab", server="http://x", token="tok-123"
    )
    from zstream_mp._context import destination

    for value in (ctx, destination(ctx), zstream_mp.bind(ctx)):
        assert "tok-123" not in repr(value)
    zstream_mp.unbind()


@pytest.mark.parametrize("token", ["tökén", "tok\nen", "tok\ten"])
def test_a_token_that_cannot_travel_in_a_header_is_refused_at_bind(token: str) -> None:
    with pytest.raises(zstream_mp.InvalidContextError):
        zstream_mp.StreamContext("7a9e2f6c-1b3d-4c5e-8f70-0123456789ab", token=token)
