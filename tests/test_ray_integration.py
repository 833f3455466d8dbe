"""Ray tasks and actors publish through `zstream_mp.integrations.ray`, counted by identity.

One driver process per module (Ray's start-up costs seconds): a local `ray.init` on
loopback with 2 CPUs whose job runtime_env binds a run through the setup hook. Tasks and
actors publish 4 x 500 events each and return with their tail still queued; a mid-run
`zray.flush_workers()` ends no actor; actors end through `__ray_terminate__` and
`exit_actor()`; `zray.shutdown()` delivers the rest before `ray.shutdown()`. Our
server must then hold exactly the expected events.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
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

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

WORKERS, EVENTS = 4, 500
TOKEN = "ray-token-" + "5f3c9a17e2b4"


@pytest.fixture(scope="module")
def ray_server() -> Iterator[RunningServer]:
    require("ray", "ray")
    with start_server(token=TOKEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def local_run(ray_server: RunningServer) -> dict[str, Any]:
    runs = new_runs("tasks", "actors", "exit", "kill")
    result, wall = run_driver(
        "ray_driver.py",
        {"server": ray_server.url, "token": TOKEN, "runs": runs, "events": EVENTS},
        timeout=240,
    )
    print(
        f"\nray driver: {wall:.1f} s wall (init {result['init_s']} s, "
        f"shutdown {result['shutdown_s']} s)"
    )
    got = {case: identities(ray_server.url, run, TOKEN) for case, run in runs.items()}
    return {"result": result, "got": got, "wall": wall, "runs": runs}


def test_user_setup_hook_runs_after_the_binding_one(local_run: dict[str, Any]) -> None:
    result = local_run["result"]
    assert result["user_hook"] == "ran"
    assert result["probe_run_id"] == local_run["runs"]["tasks"]


def test_tasks_deliver_everything_after_shutdown(local_run: dict[str, Any]) -> None:
    assert local_run["result"]["flushed"]
    assert_exactly(local_run["got"]["tasks"], expected("tasks", WORKERS, EVENTS))


def test_actors_deliver_everything_after_shutdown(local_run: dict[str, Any]) -> None:
    assert len(set(local_run["result"]["actor_pids"])) == WORKERS  # one process per actor
    assert_exactly(local_run["got"]["actors"], expected("actors", WORKERS, EVENTS))


def test_flush_workers_mid_run_ends_no_actor(local_run: dict[str, Any]) -> None:
    result = local_run["result"]
    assert result["mid_run_flush"]
    assert result["actor_pids_after_flush"] == result["actor_pids"]


def test_graceful_actor_exit_delivers_before_shutdown(local_run: dict[str, Any]) -> None:
    """`__ray_terminate__` and `exit_actor()` run atexit: dead actors delivered all."""
    assert local_run["result"]["exit_gone_before_shutdown"]
    assert_exactly(local_run["got"]["exit"], expected("exit", WORKERS, EVENTS))


def test_token_not_in_runtime_env_or_worker_environment(local_run: dict[str, Any]) -> None:
    result = local_run["result"]
    assert result["token_in_worker_env"] is False
    assert result["token_in_job_runtime_env"] is False


def test_ray_kill_delivers_in_durable_mode(local_run: dict[str, Any]) -> None:
    assert_exactly(local_run["got"]["kill"], expected("kill", WORKERS, EVENTS))


def test_importable_without_ray() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from zstream_mp.integrations import ray as zray, MissingExtraError\n"
        "import zstream_mp\n"
        "ctx = zstream_mp.StreamContext(run_id='6f1b2c3d-0000-4000-8000-000000000001')\n"
        "try:\n"
        "    zray.flush_workers()\n"
        "except MissingExtraError as exc:\n"
        '    assert isinstance(exc, ImportError) and "zstream-mp[ray]" in str(exc), exc\n'
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------ a cluster of its own


@pytest.fixture(scope="module")
def ray_cluster(ray_server: RunningServer) -> Iterator[str]:
    """`ray start --head` as its own process tree: its workers are no kin of the driver."""
    port = free_port()
    env = driver_env()
    # its own short temp dir (Ray's socket paths must stay short): `ray start` leaves a
    # ray_current_cluster file there that a plain ray.init() elsewhere would follow
    temp_dir = tempfile.mkdtemp(prefix="zray-", dir="/tmp")
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--port",
        str(port),
        "--num-cpus",
        "2",
        "--include-dashboard",
        "false",
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
        "--temp-dir",
        temp_dir,
    ]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        tree = [proc]
        with contextlib.suppress(psutil.Error):
            tree += psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _gone, alive = psutil.wait_procs(tree, timeout=30)
        for left in alive:  # only what this fixture started
            with contextlib.suppress(psutil.Error):
                left.kill()
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shared = Path("/tmp/ray/ray_current_cluster")  # in case this Ray ignores --temp-dir
        with contextlib.suppress(OSError):
            if shared.read_text().strip() == f"127.0.0.1:{port}":
                shared.unlink()


def test_cluster_started_apart_binds_through_the_hook(
    ray_server: RunningServer, ray_cluster: str
) -> None:
    """Workers of a separately started cluster see no driver environment: only the hook."""
    runs = new_runs("tasks", "actors")
    result, wall = run_driver(
        "ray_driver.py",
        {
            "server": ray_server.url,
            "token": TOKEN,
            "runs": runs,
            "events": EVENTS,
            "address": ray_cluster,
        },
        timeout=240,
    )
    print(f"\nray driver on a 'ray start' cluster: {wall:.1f} s wall")
    assert result["worker_is_descendant"] is False
    assert result["user_hook"] == "ran" and result["probe_run_id"] == runs["tasks"]
    assert result["flushed"] and result["mid_run_flush"]
    assert result["token_in_worker_env"] is False
    for case, run in runs.items():
        assert_exactly(identities(ray_server.url, run, TOKEN), expected(case, WORKERS, EVENTS))
