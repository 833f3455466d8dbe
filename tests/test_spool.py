"""The spool: what an exit path cannot deliver in its budget is spooled, adopted, delivered once.

Real processes, our real server behind a loopback proxy that adds 100 ms per POST, events
counted by identity (worker, seq) on the server.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "fork_cases"))

from _servers import RunningServer, start_server  # noqa: E402
from _spool_work import mark_exit_times, publish_burst  # noqa: E402
from _targets import ServerTarget, check_exactly_once  # noqa: E402

import zstream_mp  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
BUDGET = 2.0  # the default ZSTREAM_EXIT_TIMEOUT


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("ZSTREAM_STATE_DIR", str(path))
    monkeypatch.delenv("ZSTREAM_EXIT_TIMEOUT", raising=False)
    return path


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with start_server() as srv:
        yield srv


class SlowProxy:
    def __init__(self, upstream: str, delay: float = 0.1) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_slowproxy.py"),
                "--upstream",
                upstream,
                "--delay",
                str(delay),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("slowproxy on "), line
        self.url = line.split(" on ", 1)[1]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def slow(server: RunningServer) -> Iterator[SlowProxy]:
    proxy = SlowProxy(server.url)
    yield proxy
    proxy.stop()


def test_pool_workers_spool_what_their_budget_cannot_deliver(
    state_dir: Path, server: RunningServer, slow: SlowProxy, tmp_path: Path
) -> None:
    """Acceptance 1: Pool(4) x 2,000 events, 100 ms per POST, default exit budget."""
    target = ServerTarget(server)
    marks = tmp_path / "marks"
    marks.mkdir()
    zstream_mp.bind(target.run_id, server=slow.url)
    try:
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(4, initializer=mark_exit_times, initargs=(str(marks),))
        results = pool.map(publish_burst, [(f"w{i}", 2000) for i in range(4)], chunksize=1)
        pool.close()
        pool.join()
        assert all(isinstance(r, zstream_mp.PublisherStats) for r in results)  # it pickles
        tree = zstream_mp.stats("tree")
        pickle.loads(pickle.dumps(tree))
        assert tree.published == 8000
        assert tree.spooled > 0, "the slow server should have left work for the spool"
        assert tree.sent + tree.spooled == 8000, tree
        durations = []
        for t0 in marks.glob("*.t0"):
            t1 = t0.with_suffix(".t1")
            durations.append(float(t1.read_text()) - float(t0.read_text()))
        assert durations and max(durations) <= BUDGET + 0.1, durations
        started = time.monotonic()
        assert zstream_mp.flush_tree(60.0)
        adopt_time = time.monotonic() - started
        after = zstream_mp.stats("tree")
        assert after.spool_pending == 0
        assert after.spool_sent == tree.spooled, after
    finally:
        zstream_mp.unbind()
    problems = check_exactly_once(target.collect(), {f"w{i}": 2000 for i in range(4)})
    assert not problems, problems
    print(
        f"spooled share {tree.spooled_share:.1%} ({tree.spooled} of 8000), worker exits "
        f"max {max(durations):.3f}s, adoption {adopt_time:.2f}s"
    )
    assert not os.listdir(state_dir / "spool")
