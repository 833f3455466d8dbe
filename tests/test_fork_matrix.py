"""The executor matrix: every way of fanning out work delivers every event exactly once.

Each case runs `tests/programs/fork/driver.py` in a fresh interpreter under a hard deadline:
the parent binds a run, publishes, fans out to 4 workers that publish 500 events each
(tagged worker, seq) without flushing, publishes again and exits. The server then holds
exactly the expected identities: nothing lost, nothing twice (a child re-sending its
parent's queued events shows up as a duplicate), and no run over its deadline.

Every process keeps the library's default settings (exit budget 2 s) on every target.
ZenML's server takes 30-90 ms per POST, more under load: what a process cannot deliver
within its budget waits in its spool for the next publisher on the host. Against ZenML the
test is that next publisher (`zstream-mp spool drain` after the driver) and counts exactly
once over both; the share the spool carried is in the summary (`drained`).

Interpreters: `sys.executable` plus every path in `ZSTREAM_TEST_PYTHONS` (comma list);
each needs httpx, psutil, filelock and joblib installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.programs import program
from helpers.targets import (
    FaultTarget,
    ServerTarget,
    Target,
    ZenmlTarget,
    check_exactly_once,
    child_env,
    interpreters,
    python_version,
    run_bounded,
)
from programs.fork.driver import CASES, expected_workers
from programs.fork.driver import PARENT_EVENTS as DRIVER_PARENT_EVENTS

pytestmark = pytest.mark.forkmatrix

DRIVER = program("fork/driver.py")
EVENTS = 500
GRANDCHILD_EVENTS = 250
PARENT_EVENTS = 1000
DEADLINE = 60.0
DRAIN_AFTER = {"zenml"}
"""Targets whose spools a later publisher drains before counting (see the module doc)."""
PYTHONS = interpreters()


def _python_id(python: str) -> str:
    return "py" + python_version(python)


@pytest.fixture(scope="module")
def our_server() -> Iterator[Any]:
    from helpers.servers import start_server

    with start_server(token="fork-token-" + os.urandom(6).hex()) as server:
        yield server


@pytest.fixture(scope="module")
def zenml_run() -> Iterator[tuple[Any, Any, list[str | None]]]:
    from helpers import zenml_peer

    try:
        peer = zenml_peer.ensure_peer()
        with zenml_peer.held_run(peer) as held:
            yield peer, held, [None]
    except zenml_peer.PeerUnavailable as exc:
        pytest.skip(f"ZENML PEER UNAVAILABLE, ZenML matrix NOT RUN: {exc}")


def run_case(python: str, case: str, target: Target) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    parent_events = DRIVER_PARENT_EVENTS.get(case, PARENT_EVENTS)
    extra = {
        "FORK_CASE_TAG": tag,
        "FORK_CASE_EVENTS": str(EVENTS),
        "FORK_CASE_GRANDCHILD_EVENTS": str(GRANDCHILD_EVENTS),
    }
    env = child_env(python, extra)
    cmd = [
        python,
        str(DRIVER),
        case,
        "--server",
        target.url,
        "--run",
        target.run_id,
        "--parent-events",
        str(parent_events),
    ]
    if target.token:
        cmd += ["--token", target.token]
    res = run_bounded(cmd, env=env, deadline=DEADLINE)
    where = f"[{case} on {target.name}, python {python}]"
    assert not res.timed_out, (
        f"{where} over its {DEADLINE}s deadline (deadlock?); stragglers {res.stragglers}\n"
        f"stderr:\n{res.stderr[-3000:]}"
    )
    assert res.returncode == 0, f"{where} driver failed rc={res.returncode}:\n{res.stderr[-3000:]}"
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    summary["elapsed"] = round(res.elapsed, 2)
    if target.name in DRAIN_AFTER:
        summary["drained"] = _drain_spools(python, env)
    expected = {"parent": 2 * parent_events, **expected_workers(case, EVENTS, GRANDCHILD_EVENTS)}
    target.expect = (tag, sum(expected.values()))
    payloads = [p for p in target.collect() if p.get("tag") == tag]
    problems = check_exactly_once(payloads, expected)
    assert not problems, f"{where} {'; '.join(problems)}\nsummary {summary}\n{res.stderr[-2000:]}"
    assert not res.stderr.strip() or "Traceback" not in res.stderr, res.stderr[-3000:]
    print(f"{where} ok {summary}")
    return summary


def _drain_spools(python: str, env: dict[str, str]) -> int:
    """What the next publisher on the host does: deliver every spool the tree left."""
    out = subprocess.run(
        [python, "-m", "zstream_mp", "spool", "drain", "--timeout", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, f"spool drain failed: {out.stdout}{out.stderr}"
    return int(out.stdout.split()[1])


@pytest.mark.parametrize("python", PYTHONS, ids=_python_id)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matrix_fault_server(python: str, case: str, tmp_path: Path) -> None:
    """Against the recording fault server with a slow start: the parent's queue is full at fork."""
    target = FaultTarget(tmp_path / "rec", slow_start=0.3)
    try:
        summary = run_case(python, case, target)
    finally:
        target.close()
    assert summary["queued_at_fork"] > 0, "precondition: the parent's queue was empty at fork"


@pytest.mark.parametrize("python", PYTHONS, ids=_python_id)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matrix_our_server(python: str, case: str, our_server: Any) -> None:
    run_case(python, case, ServerTarget(our_server))


@pytest.mark.zenml
@pytest.mark.parametrize("python", PYTHONS, ids=_python_id)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matrix_zenml(python: str, case: str, zenml_run: Any) -> None:
    peer, held, cursor = zenml_run
    run_case(python, case, ZenmlTarget(peer, held, cursor))
