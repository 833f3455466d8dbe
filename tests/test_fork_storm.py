"""Fork storm: 2,000 forks while 4 threads publish at full rate in the parent.

No deadlock (every child carries a watchdog and the whole storm a hard deadline), every
child publishes one event and exits within its budget, and every child's event arrives
exactly once. The parent's own events are checked for duplicates and against its stats.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.programs import program
from helpers.targets import (
    FaultTarget,
    ServerTarget,
    Target,
    check_exactly_once,
    child_env,
    run_bounded,
)

STORM = program("fork/storm.py")
FORKS = int(os.environ.get("ZSTREAM_STORM_FORKS", "400"))
"""Forks against the recording fault server (exact counts from its record): a second
opinion on the same check, shorter, to keep the suite in its CI budget."""
SERVER_FORKS = int(os.environ.get("ZSTREAM_STORM_SERVER_FORKS", "2000"))
"""Forks against our server: the full storm of the acceptance criterion."""
CHILD_DEADLINE = 10
"""Watchdog of each child: its exit budget (2 s) plus generous room for a loaded machine."""
DEADLINE = 420.0


@pytest.fixture(scope="module")
def our_server() -> Iterator[Any]:
    from helpers.servers import start_server

    with start_server(
        token="fork-token-" + os.urandom(6).hex(), max_stream_length=10_000_000
    ) as server:
        yield server


def storm(target: Target, forks: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(STORM),
        "--server",
        target.url,
        "--run",
        target.run_id,
        "--forks",
        str(forks),
        "--child-deadline",
        str(CHILD_DEADLINE),
    ]
    if target.token:
        cmd += ["--token", target.token]
    res = run_bounded(cmd, env=child_env(sys.executable), deadline=DEADLINE)
    assert not res.timed_out, f"storm over its {DEADLINE}s deadline:\n{res.stderr[-3000:]}"
    assert res.returncode == 0, f"storm failed rc={res.returncode}:\n{res.stderr[-3000:]}"
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print(
        f"[storm on {target.name}] {res.elapsed:.1f}s "
        f"{ {k: v for k, v in report.items() if k != 'failures'} }"
    )
    assert not report["failures"], (
        f"{len(report['failures'])} children failed (exit -14 = watchdog): "
        f"{report['failures'][:10]}"
    )
    assert report["lifetime_max"] < CHILD_DEADLINE

    payloads = target.collect()
    children = [p for p in payloads if p.get("worker") == "child"]
    problems = check_exactly_once(children, {"child": forks})
    assert not problems, f"children's events: {'; '.join(problems)}"

    parent = Counter((p["worker"], p["seq"]) for p in payloads if p.get("worker") != "child")
    dups = [k for k, n in parent.items() if n > 1]
    assert not dups, f"parent events delivered twice: {dups[:10]}"
    st = report["stats"]
    assert report["flushed"], f"the parent's final flush did not finish: {st}"
    assert sum(parent.values()) == st["sent"], (sum(parent.values()), st)
    assert st["published"] == sum(report["thread_published"])
    assert st["published"] == st["sent"] + sum(st["dropped"].values()) + st["queued"], st
    return report


def test_fork_storm_fault_server(tmp_path: Path) -> None:
    target = FaultTarget(tmp_path / "rec", slow_start=0)
    try:
        storm(target, FORKS)
    finally:
        target.close()


def test_fork_storm_our_server(our_server: Any) -> None:
    storm(ServerTarget(our_server), SERVER_FORKS)
