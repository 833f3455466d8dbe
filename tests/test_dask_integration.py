"""Dask workers publish through `zstream_mp.integrations.dask`, counted by identity.

A `LocalCluster` with 2 worker processes started *before* the client knows its run, and
a scheduler plus 2 workers started by the `dask scheduler` / `dask worker` CLIs on
loopback. `StreamPlugin` is registered (no `bind()` in the client); `map` and
`submit` publish 4 x 500 events each and return with their tail still queued (and a
worker added after the registration publishes 500). After
`client.close()` and the cluster's close (or SIGTERM to the CLI workers), our server
must hold exactly the expected events.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.faultserver import FaultProcess
from helpers.frameworks import (
    assert_exactly,
    driver_env,
    expected,
    identities,
    new_runs,
    require,
    run_driver,
)
from helpers.servers import RunningServer, free_port, start_server

pytestmark = [pytest.mark.dask, pytest.mark.timeout(300)]

WORKERS, EVENTS = 4, 500
TOKEN = "dask-token-" + "0c8e51d2a9f7"


def both() -> collections.Counter[tuple[str, int, int]]:
    return expected("map", WORKERS, EVENTS) + expected("submit", WORKERS, EVENTS)


@pytest.fixture(scope="module")
def dask_server() -> Iterator[RunningServer]:
    require("distributed", "dask")
    with start_server(token=TOKEN) as srv:
        yield srv


def test_local_cluster_started_before_the_run(dask_server: RunningServer) -> None:
    run = new_runs("local")["local"]
    result, wall = run_driver(
        "dask_driver.py",
        {"server": dask_server.url, "token": TOKEN, "run": run, "scheduler": "local"},
        timeout=180,
    )
    print(
        f"\ndask LocalCluster driver: {wall:.1f} s wall (start {result['start_s']} s, "
        f"close {result['close_s']} s)"
    )
    assert result["driver_context"] is False  # the client never bound anything
    assert len(result["pids"]) == 2 and result["late_pid"] not in result["pids"]
    got = identities(dask_server.url, run, TOKEN)
    assert_exactly(got, both() + expected("late", 1, EVENTS))


def test_teardown_delivers_a_backlog_inside_the_nanny_budget(tmp_path: Path) -> None:
    """A server that answers each batch after 0.05 s leaves each worker ~1.6 s of backlog
    (2,000 events, 32 batches) when the cluster closes: the plugin's teardown and the exit
    hooks must deliver all of it before the Nanny's SIGKILL at 4 s."""
    require("distributed", "dask")
    run = new_runs("slow")["slow"]
    with FaultProcess(tmp_path / "rec", script=[{"action": "accept", "delay": 0.05}]) as fault:
        result, _wall = run_driver(
            "dask_driver.py",
            {
                "server": fault.url,
                "token": None,
                "run": run,
                "scheduler": "local",
                "late": False,
                "state_url": f"{fault.url}/_control/state",
            },
            timeout=180,
        )
        events = [e["event"]["payload"] for e in fault.accepted() if e["run"] == run]
    print(
        f"\ndask close with a backlog: {result['close_s']} s "
        f"({result['accepted_before_close']} of {2 * WORKERS * EVENTS} in before the close)"
    )
    assert result["accepted_before_close"] < 2 * WORKERS * EVENTS, "no backlog: test is moot"
    assert_exactly([(p["case"], p["worker"], p["seq"]) for p in events], both())


def _dask_cli() -> list[str]:
    found = Path(sys.executable).with_name("dask")
    return [str(found)] if found.exists() else [shutil.which("dask") or "dask"]


def _stop(proc: subprocess.Popen[Any], timeout: float = 20.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def test_cli_scheduler_and_workers(dask_server: RunningServer, tmp_path: Path) -> None:
    """Workers that are no relatives of the client: the plugin travels via the scheduler."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = driver_env()
    logs = [open(tmp_path / f"{name}.log", "wb") for name in ("scheduler", "workers")]  # noqa: SIM115
    t0 = time.monotonic()
    scheduler = subprocess.Popen(
        [
            *_dask_cli(),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--no-show",
        ],
        env=env,
        stdout=logs[0],
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    workers = subprocess.Popen(
        [
            *_dask_cli(),
            "worker",
            address,
            "--host",
            "127.0.0.1",
            "--nworkers",
            "2",
            "--nthreads",
            "1",
            "--no-dashboard",
        ],
        env=env,
        stdout=logs[1],
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run = new_runs("cli")["cli"]
        result, wall = run_driver(
            "dask_driver.py",
            {"server": dask_server.url, "token": TOKEN, "run": run, "scheduler": address},
            timeout=180,
        )
        assert len(result["pids"]) == 2
        # the workers outlive the client: end them as an operator would (graceful SIGTERM)
        t1 = time.monotonic()
        worker_rc = _stop(workers)
        stop_s = time.monotonic() - t1
    finally:
        _stop(workers)
        _stop(scheduler)
        for log in logs:
            log.close()
    print(
        f"\ndask CLI: {time.monotonic() - t0:.1f} s wall (driver {wall:.1f} s, "
        f"workers' stop {stop_s:.1f} s, rc {worker_rc})"
    )
    got = identities(dask_server.url, run, TOKEN)
    if len(got) != 2 * WORKERS * EVENTS:
        print((tmp_path / "workers.log").read_text()[-3000:])
    assert_exactly(got, both())


def test_importable_without_distributed() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from zstream_mp.integrations import dask as zdask, MissingExtraError\n"
        "import zstream_mp\n"
        "ctx = zstream_mp.StreamContext(run_id='6f1b2c3d-0000-4000-8000-000000000002')\n"
        "try:\n"
        "    zdask.plugin(ctx)\n"
        "except MissingExtraError as exc:\n"
        '    assert isinstance(exc, ImportError) and "zstream-mp[dask]" in str(exc), exc\n'
        "    print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ZSTREAM_")},
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
