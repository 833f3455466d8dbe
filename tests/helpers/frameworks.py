"""Helpers for the Ray and Dask tests: driver subprocesses and counting by identity.

Each framework runs in a driver script under `programs/frameworks/` (its own process, so a
crash or a hung shutdown cannot take pytest down); the driver's last stdout line is
`RESULT <json>`. Events carry `{"case", "worker", "seq"}` payloads, and the tests
compare the exact multiset the server holds with the expected one.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from helpers import programs
from helpers.servers import REPO
from helpers.sse import frames_of, sse_body

CASES = programs.PROGRAMS / "frameworks"


def require(module: str, extra: str) -> None:
    """Skip loudly when a framework is not installed (found, never imported, here)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{module} is not installed: the {extra} integration tests were NOT run; "
            f"pip install -e '.[{extra}]'"
        )


def new_runs(*cases: str) -> dict[str, str]:
    return {case: str(uuid.uuid4()) for case in cases}


def driver_env(**extra: str) -> dict[str, str]:
    env = programs.env(base={k: v for k, v in os.environ.items() if not k.startswith("ZSTREAM_")})
    env["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 turns token auth on by default
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


def run_driver(
    script: str, config: dict[str, Any], *, timeout: float, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], float]:
    """Run a driver script; return its RESULT and wall time, or fail with its output."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(CASES / script), json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or driver_env(),
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{script} did not finish in {timeout}s: {exc.stderr!r}") from exc
    wall = time.monotonic() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"{script} rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
        f"stderr:\n{proc.stderr[-5000:]}"
    )
    return json.loads(lines[-1][len("RESULT ") :]), wall


def identities(url: str, run_id: str, token: str | None = None) -> list[tuple[str, int, int]]:
    """End `run_id` on our server and return every event's (case, worker, seq)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(f"{url}/api/v1/zstream/runs/{run_id}/end", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    status, _, body = sse_body(f"{url}/api/v1/runs/{run_id}/events/stream", headers=headers)
    assert status == 200
    out = []
    for frame in frames_of(body):
        if frame.get("event") in (None, "end", "gap", "cursor", "error", "system"):
            continue
        payload = json.loads(frame["data"])["payload"]
        out.append((payload["case"], payload["worker"], payload["seq"]))
    return out


def expected(case: str, workers: int, events: int) -> collections.Counter[tuple[str, int, int]]:
    return collections.Counter((case, w, s) for w in range(workers) for s in range(events))


def assert_exactly(
    got: list[tuple[str, int, int]], want: collections.Counter[tuple[str, int, int]]
) -> None:
    """The server holds exactly `want`: nothing lost, nothing duplicated, nothing extra."""
    have = collections.Counter(got)
    missing = want - have
    extra = have - want
    assert not missing and not extra, (
        f"{sum(have.values())} events for {sum(want.values())} expected: "
        f"{sum(missing.values())} missing (e.g. {sorted(missing)[:5]}), "
        f"{sum(extra.values())} duplicated or unexpected (e.g. {sorted(extra)[:5]})"
    )
