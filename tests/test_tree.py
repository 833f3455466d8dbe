"""flush_tree(): True only when every descendant's events are on the server; False in time
for a hung one. `zstream-mp stats --tree` rows match what the server holds."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faultserver import FaultProcess
from helpers.servers import RunningServer, start_server
from helpers.targets import ServerTarget, check_exactly_once
from programs.fork.spool_work import nested, publish_burst, publish_then_hang

import zstream_mp

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("ZSTREAM_STATE_DIR", str(path))
    return path


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with start_server(max_stream_length=200_000) as srv:
        yield srv


def _run_pool(method: str, n: int) -> None:
    ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(2)
    pool.map(publish_burst, [(f"{method}{i}", n) for i in range(3)], chunksize=1)
    pool.close()
    pool.join()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver", "loky", "nested"])
def test_tree_flush_waits_for_every_descendant(
    state_dir: Path, server: RunningServer, method: str
) -> None:
    target = ServerTarget(server)
    zstream_mp.bind(target.run_id, server=server.url)
    expected: dict[str, int] = {}
    try:
        if method == "loky":
            joblib = pytest.importorskip("joblib")
            joblib.Parallel(n_jobs=2, backend="loky")(
                joblib.delayed(publish_burst)((f"loky{i}", 500)) for i in range(3)
            )
            expected = {f"loky{i}": 500 for i in range(3)}
        elif method == "nested":
            from concurrent.futures import ProcessPoolExecutor

            # pool workers are daemonic and may not have children: the outer level is an
            # executor, each of its workers runs a multiprocessing Pool
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(2, mp_context=ctx) as executor:
                list(executor.map(nested, [(f"n{i}", 300) for i in range(2)]))
            for i in range(2):
                expected[f"n{i}"] = 300
                expected[f"n{i}.0"] = expected[f"n{i}.1"] = 300
        else:
            _run_pool(method, 500)
            expected = {f"{method}{i}": 500 for i in range(3)}
        # loky's workers outlive the call, their events possibly still queued: the flush waits
        assert zstream_mp.flush_tree(30.0)
        tree = zstream_mp.stats("tree")
        assert tree.published == sum(expected.values()), tree
        assert tree.queued == 0
        assert tree.spool_pending == 0
    finally:
        zstream_mp.unbind()
    payloads = target.collect()
    assert not check_exactly_once(payloads, expected)
    # the CLI's per-process rows match what the server holds
    out = subprocess.run(
        [sys.executable, "-m", "zstream_mp", "stats", "--tree", str(os.getpid()), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]  # JSON lines
    assert sum(r["stats"]["sent"] + r["stats"]["spool_sent"] for r in rows) == len(payloads)
    assert sum(r["stats"]["published"] for r in rows) == len(payloads)


def test_tree_flush_is_false_in_time_for_a_hung_descendant(state_dir: Path, tmp_path: Path) -> None:
    with FaultProcess(tmp_path / "rec", script=[{"action": "stall"}]) as stalled:
        zstream_mp.bind(str(uuid.uuid4()), server=stalled.url)
        try:
            ctx = multiprocessing.get_context("spawn")
            ready = ctx.Event()
            proc = ctx.Process(target=publish_then_hang, args=("h", 50, ready))
            proc.start()
            assert ready.wait(30)
            started = time.monotonic()
            assert not zstream_mp.flush_tree(1.0)
            elapsed = time.monotonic() - started
            assert elapsed < 1.5, elapsed
            row = next(r for r in zstream_mp.stats("tree").processes if r.pid == proc.pid)
            assert row.state == "alive" and row.stats.queued == 50
            proc.kill()
            proc.join()
        finally:
            zstream_mp.unbind()
