"""Faults injected for real by a server process: nothing lost beyond the documented policy.

Every scenario runs a publisher in its own process (tests/programs/faults/fault_client.py) against
tests/helpers/faultserver.py, which answers with real status codes, drops or resets real
connections, stalls, or is killed and started again on the same port. Every event carries its
`seq`; the server records every request and every accepted event, so the test counts
exactly and checks that each batch kept one Idempotency-Key across its retries.

Policy under test (zstream_mp/_transport.py):
* 429/502/503/504 and connection faults: retried; every event delivered exactly once.
* 400/401/403/404/413/422: the batch is dropped and counted in `dropped['rejected']`.
* 501/405: the process mutes itself with ONE warning; later publishes count as `muted`.
* `flush(timeout)` never waits longer than asked; process exit never waits longer than
  `ZSTREAM_EXIT_TIMEOUT`.
* Log lines never carry the payload.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.faultserver import FaultProcess
from helpers.programs import program
from helpers.targets import child_env

CLIENT = program("faults/fault_client.py")
MARKER = "SECRET-PAYLOAD-7f3a"
FLUSH_SLACK = 0.1
EXIT_SLACK = 0.5


@dataclass
class ClientRun:
    report: dict[str, Any]
    stderr: str
    elapsed: float
    returncode: int

    @property
    def log_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("ZSLOG|")]

    @property
    def warnings(self) -> list[str]:
        return [ln for ln in self.log_lines if ln.split("|")[1] in ("WARNING", "ERROR", "CRITICAL")]

    def final(self, key: str) -> Any:
        return self.report["stats"]["final"][key]


def start_client(
    url: str,
    run: str,
    steps: list[dict[str, Any]],
    *,
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(CLIENT), url, run, json.dumps(steps)]
    if token is not None:
        cmd += ["--token", token]
    return subprocess.Popen(
        cmd,
        env=child_env(sys.executable, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], started: float, deadline: float = 90.0) -> ClientRun:
    try:
        out, err = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"publisher process hung past {deadline}s:\n{err[-3000:]}") from None
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"publisher failed rc={proc.returncode}:\n{err[-3000:]}"
    report = json.loads(out.strip().splitlines()[-1])
    assert MARKER not in err, (
        "a log line carries the payload:\n"
        + "\n".join(ln for ln in err.splitlines() if MARKER in ln)[:3000]
    )
    return ClientRun(report, err, elapsed, proc.returncode)


def run_client(url: str, run: str, steps: list[dict[str, Any]], **kw: Any) -> ClientRun:
    started = time.monotonic()
    return finish(start_client(url, run, steps, **kw), started)


def seqs_of(events: list[dict[str, Any]]) -> list[int]:
    return [int(ev["payload"]["seq"]) for ev in events]


def delivered(fp: FaultProcess, run: str) -> Counter[int]:
    return Counter(int(e["event"]["payload"]["seq"]) for e in fp.accepted() if e["run"] == run)


def key_problems(fp: FaultProcess, run: str) -> list[str]:
    """One Idempotency-Key per batch, the same on every retry, never shared by two batches."""
    by_key: dict[str, list[list[int]]] = {}
    key_of_seq: dict[int, set[str]] = {}
    problems = []
    for req in fp.requests():
        if req["run"] != run:
            continue
        key = req["key"]
        if not key:
            problems.append(f"request {req['n']} has no Idempotency-Key")
            continue
        seqs = seqs_of(req["events"])
        by_key.setdefault(key, []).append(seqs)
        for s in seqs:
            key_of_seq.setdefault(s, set()).add(key)
    for key, sends in by_key.items():
        if any(s != sends[0] for s in sends):
            problems.append(f"key {key} was reused for different batches: {[s[:3] for s in sends]}")
    multi = {s: k for s, k in key_of_seq.items() if len(k) > 1}
    if multi:
        problems.append(
            f"{len(multi)} events were sent under several keys, e.g. {sorted(multi.items())[:2]}"
        )
    return problems


def assert_exactly_once(got: Counter[int], want: set[int]) -> None:
    missing = sorted(want - set(got))
    dups = sorted(s for s, n in got.items() if n > 1)
    extra = sorted(set(got) - want)
    assert not (missing or dups or extra), (
        f"missing {len(missing)} {missing[:10]}, duplicated {len(dups)} {dups[:10]}, "
        f"unexpected {extra[:10]}"
    )


@pytest.fixture
def run_id() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------------ retryable faults

RETRYABLE = [
    ("503-retry-after-1", [{"status": 503, "retry_after": 1, "count": 3}], {}),
    ("502", [{"status": 502, "count": 3}], {}),
    ("504", [{"status": 504, "count": 3}], {}),
    ("429-retry-after-1", [{"status": 429, "retry_after": 1, "count": 2}], {}),
    ("drop-after-body", [{"action": "drop", "count": 3}], {}),
    ("reset-after-body", [{"action": "reset", "count": 3}], {}),
    ("stall-then-ok", [{"action": "stall", "count": 1}], {"ZSTREAM_REQUEST_TIMEOUT": "1"}),
    (
        "mixed",
        [
            {"status": 503, "retry_after": 0, "count": 1},
            {"action": "drop", "count": 1},
            {"status": 502, "count": 1},
            {"status": 429, "count": 1},
            {"action": "reset", "count": 1},
        ],
        {},
    ),
]


@pytest.mark.parametrize(("name", "script", "env"), RETRYABLE, ids=[r[0] for r in RETRYABLE])
def test_retryable_fault_delivers_everything_once(
    name: str,
    script: list[dict[str, Any]],
    env: dict[str, str],
    tmp_path: Path,
    run_id: str,
) -> None:
    faults = sum(int(r["count"]) for r in script)
    with FaultProcess(tmp_path, script=script) as fp:
        res = run_client(fp.url, run_id, [{"publish": 300}, {"flush": 30}], env=env)
        assert res.report["flushes"][0]["ok"], f"{name}: flush(30) did not deliver"
        assert_exactly_once(delivered(fp, run_id), set(range(300)))
        assert not key_problems(fp, run_id), key_problems(fp, run_id)
        failed_requests = [r for r in fp.requests() if r["status"] != 200]
        assert len(failed_requests) == faults, "the script was not played as written"
    assert res.final("sent") == 300
    assert res.final("retries") >= faults, res.report["stats"]
    assert sum(res.final("dropped").values()) == 0, res.final("dropped")


def test_stored_but_unanswered_is_resent_under_the_same_key(tmp_path: Path, run_id: str) -> None:
    """The server stored the batch but the answer was lost: the retry reuses the key.

    A server without deduplication then holds two copies; both carry the one key, which is
    what lets a deduplicating server (or a reader) drop the second.
    """
    with FaultProcess(tmp_path, script=[{"action": "accept_drop", "count": 2}]) as fp:
        res = run_client(fp.url, run_id, [{"publish": 200}, {"flush": 30}])
        assert res.report["flushes"][0]["ok"]
        got = delivered(fp, run_id)
        assert set(got) == set(range(200)), sorted(set(range(200)) - set(got))[:10]
        assert not key_problems(fp, run_id), key_problems(fp, run_id)
        keys: dict[int, set[str]] = {}
        for e in fp.accepted():
            keys.setdefault(int(e["event"]["payload"]["seq"]), set()).add(e["key"])
        assert all(len(k) == 1 for k in keys.values()), "copies of one event under two keys"
    assert sum(res.final("dropped").values()) == 0


def test_server_down_then_back_on_the_same_port(tmp_path: Path, run_id: str) -> None:
    fp = FaultProcess(tmp_path)
    fp.stop()  # connections are refused from now on
    down, back = tmp_path / "down-seen", tmp_path / "server-back"
    steps = [
        {"publish": 200},
        {"flush": 0.5},
        {"touch": str(down)},
        {"wait_file": str(back)},
        {"flush": 25},
    ]
    started = time.monotonic()
    proc = start_client(fp.url, run_id, steps)
    try:
        deadline = time.monotonic() + 30
        while not down.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # a little longer down
        fp.start()
        back.touch()
        res = finish(proc, started)
        first, second = res.report["flushes"]
        assert not first["ok"], "flush() claimed delivery while the server was down"
        assert first["elapsed"] <= 0.5 + FLUSH_SLACK, first
        assert second["ok"], "nothing delivered after the server came back"
        assert_exactly_once(delivered(fp, run_id), set(range(200)))
        assert not key_problems(fp, run_id), key_problems(fp, run_id)
    finally:
        fp.stop()
    assert sum(res.final("dropped").values()) == 0


# ------------------------------------------------------------------------- rejected batches

REJECTS = [400, 404, 413, 422]


@pytest.mark.parametrize("status", REJECTS)
def test_rejected_batch_is_dropped_and_counted(status: int, tmp_path: Path, run_id: str) -> None:
    """A refusal of the batch itself is final: dropped, counted, warned once, and the
    flush that waited for it says so (False); the next flush is True again."""
    fp = FaultProcess(tmp_path, script=[{"status": status, "count": 1}])
    steps = [{"publish": 100}, {"flush": 10}, {"stats": "first"}, {"publish": 100}, {"flush": 10}]
    with fp:
        res = run_client(fp.url, run_id, steps)
        refused = [r for r in fp.requests() if r["status"] == status]
        assert refused, f"no request was answered {status}"
        assert len(refused) == 1, f"a {status} batch was retried: {len(refused)} requests"
        rejected = {s for r in refused for s in seqs_of(r["events"])}
        total = set(res.report["seqs"])
        got = delivered(fp, run_id)
        assert_exactly_once(got, total - rejected)
        assert not key_problems(fp, run_id), key_problems(fp, run_id)
    first, second = (f["ok"] for f in res.report["flushes"])
    assert not first, "flush() said True although a batch it waited for was refused"
    assert second, "a refusal before this flush made it say False"
    dropped = res.final("dropped")
    assert dropped["rejected"] == len(rejected), dropped
    assert sum(dropped.values()) == len(rejected), dropped
    assert res.final("sent") == len(total) - len(rejected)
    assert not res.final("muted")
    warnings = res.warnings
    assert warnings, f"a {status} drop was silent"
    assert any(str(status) in w for w in warnings), warnings
    assert len(warnings) == 1, f"one rejected batch, several warnings: {warnings}"


def test_forbidden_batch_is_kept_and_sent_again(tmp_path: Path, run_id: str) -> None:
    """A 403 is about credentials, not the batch: it is kept (spooled), and once the server
    takes it the process itself delivers it again, before anything newer: once, in order."""
    fp = FaultProcess(tmp_path, script=[{"status": 403, "count": 1}])
    steps = [{"publish": 100}, {"flush": 10}, {"publish": 100}, {"flush": 10}]
    with fp:
        res = run_client(fp.url, run_id, steps)
        got = delivered(fp, run_id)
        total = set(res.report["seqs"])
        assert_exactly_once(got, total)
        order = [int(e["event"]["payload"]["seq"]) for e in fp.accepted() if e["run"] == run_id]
        assert order == sorted(order), "a kept batch went out after newer events"
    dropped = res.final("dropped")
    assert sum(dropped.values()) == 0, dropped
    assert res.final("sent") == len(total)
    assert any("403" in w and "kept in the spool" in w for w in res.warnings), res.warnings


def test_unauthorized_batches_are_kept_with_a_hint(tmp_path: Path, run_id: str) -> None:
    """A wrong token (401 on every try): nothing is dropped, everything is kept in the
    spool for an attempt with valid credentials, flush() says False and the warning says
    how to fix it."""
    fp = FaultProcess(tmp_path, token="right-token")
    steps = [{"publish": 100}, {"flush": 10}, {"stats": "first"}]
    with fp:
        res = run_client(fp.url, run_id, steps, token="wrong-token")
        assert [r for r in fp.requests() if r["status"] == 401], "no request was answered 401"
        assert not delivered(fp, run_id)
    assert not any(f["ok"] for f in res.report["flushes"]), "flush() said True on a 401"
    assert sum(res.final("dropped").values()) == 0, res.final("dropped")
    assert res.final("spooled") == 100, res.final("spooled")
    assert any("401" in w and "token" in w for w in res.warnings), res.warnings


@pytest.mark.parametrize("status", [501, 405])
def test_unsupported_server_mutes_with_one_warning(
    status: int, tmp_path: Path, run_id: str
) -> None:
    with FaultProcess(tmp_path, script=[{"status": status}]) as fp:
        steps = [{"publish": 50}, {"flush": 10}, {"stats": "muted"}, {"publish": 100}, {"flush": 5}]
        res = run_client(fp.url, run_id, steps)
        requests = fp.requests()
        assert len(requests) == 1, f"kept sending after {status}: {len(requests)} requests"
        assert not fp.accepted()
    first = res.report["stats"]["muted"]
    final = res.report["stats"]["final"]
    assert first["muted"] and final["muted"]
    assert final["dropped"]["muted"] - first["dropped"]["muted"] == 100, final["dropped"]
    assert sum(final["dropped"].values()) == 150, final["dropped"]
    assert final["sent"] == 0
    assert all(f["ok"] for f in res.report["flushes"])
    assert len(res.warnings) == 1, f"expected ONE warning, got {res.warnings}"


def test_reauthentication_after_401(tmp_path: Path, run_id: str) -> None:
    """A 401 makes the transport take a fresh token and resend the batch: ZSTREAM_TOKEN,
    because ZSTREAM_SERVER names this very server (it is that server's credential)."""
    with FaultProcess(tmp_path, token="fresh-token") as fp:
        steps = [
            {"setenv": {"ZSTREAM_TOKEN": "fresh-token", "ZSTREAM_SERVER": fp.url}},
            {"publish": 150},
            {"flush": 10},
            {"publish": 50},
            {"flush": 10},
        ]
        res = run_client(fp.url, run_id, steps, token="stale-token")
        assert all(f["ok"] for f in res.report["flushes"])
        assert_exactly_once(delivered(fp, run_id), set(range(200)))
        assert not key_problems(fp, run_id), key_problems(fp, run_id)
        statuses = [r["status"] for r in fp.requests()]
        assert statuses.count(401) == 1, f"re-authenticated more than once: {statuses}"
    assert sum(res.final("dropped").values()) == 0


# ------------------------------------------------------------------------- time bounds

STUCK = [
    ("stall", [{"action": "stall"}]),
    ("503-retry-after-20", [{"status": 503, "retry_after": 20}]),
    ("503-retry-after-30", [{"status": 503, "retry_after": 30}]),
    ("429-retry-after-30", [{"status": 429, "retry_after": 30}]),
]


@pytest.mark.parametrize(("name", "script"), STUCK, ids=[s[0] for s in STUCK])
def test_flush_returns_within_its_timeout(
    name: str, script: list[dict[str, Any]], tmp_path: Path, run_id: str
) -> None:
    with FaultProcess(tmp_path, script=script) as fp:
        steps = [
            {"publish": 100},
            {"flush": 0.5},
            {"flush": 0},
            {"flush": 1.0},
            {"publish": 10},
            {"flush": 0.3},
            {"exit": "os._exit"},
        ]
        res = run_client(fp.url, run_id, steps)
    for f in res.report["flushes"]:
        assert f["elapsed"] <= f["timeout"] + FLUSH_SLACK, f"{name}: {f}"
    final = res.report["stats"]["final"]
    assert final["sent"] == 0
    for f in res.report["flushes"]:
        assert not f["ok"], f"{name}: flush() reported delivery: {f}"
    # Nothing a flush gave up on is lost: it is in the spool (or was given up by the
    # transport when Retry-After is past its 30 s deadline, counted as failed).
    assert final["dropped"]["failed"] + final["queued"] + final["spooled"] == 110, final


def _exit_time(url: str, run: str, env: dict[str, str]) -> tuple[float, ClientRun]:
    res = run_client(url, run, [{"publish": 300}], env=env)
    return res.elapsed, res


@pytest.mark.parametrize("budget", [None, 1.0])
@pytest.mark.parametrize(
    ("name", "script"), [*STUCK, ("down", None)], ids=[*(s[0] for s in STUCK), "down"]
)
def test_exit_never_waits_past_the_budget(
    name: str, script: list[dict[str, Any]] | None, budget: float | None, tmp_path: Path
) -> None:
    env = {} if budget is None else {"ZSTREAM_EXIT_TIMEOUT": str(budget)}
    allowed = 2.0 if budget is None else budget
    with FaultProcess(tmp_path / "ok") as ok:
        base_run = str(uuid.uuid4())
        baseline, _base = _exit_time(ok.url, base_run, env)
        assert_exactly_once(delivered(ok, base_run), set(range(300)))
    with FaultProcess(tmp_path / "bad", script=script or []) as bad:
        if script is None:
            bad.stop()
        took, _res = _exit_time(bad.url, str(uuid.uuid4()), env)
    assert took <= baseline + allowed + EXIT_SLACK, (
        f"{name}: exit took {took:.2f}s; baseline {baseline:.2f}s + budget {allowed}s "
        f"+ {EXIT_SLACK}s slack"
    )
