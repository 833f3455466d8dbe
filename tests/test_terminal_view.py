"""`tail --live` and the demo in a real terminal: tmux, read back with `capture-pane`.

One bar per worker, and each row's counts equal what the server holds for that worker.
A private tmux server (`-L`) per test, so nobody else's sessions are touched.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.servers import REPO, RunningServer

import zstream_mp
from zstream_mp.runs import create_run, end_run

pytest.importorskip("rich", reason="the tui extra (rich) is not installed")
if shutil.which("tmux") is None:
    pytest.skip(
        "tmux is not installed (apt-get install -y tmux): terminal view tests NOT run",
        allow_module_level=True,
    )

WORKERS = 4
PER_WORKER = 60
ROW = re.compile(
    r"^\s*(?P<name>[\w-]+)\s+\S+\s+(?P<done>\d+)/(?P<total>\d+)(?: ✓)?\s+"
    r"(?P<events>\d+)\s+(?P<rate>\d+)\s+(?P<dropped>\d+)\s*$",
    re.M,
)


class Tmux:
    """One private tmux server with one 200x60 window running a command."""

    def __init__(self) -> None:
        self.socket = f"zstream-test-{uuid.uuid4().hex[:8]}"

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        ).stdout

    def start(self, command: list[str], env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={v!r}" for k, v in env.items())
        shell = f"cd {REPO} && env {exports} {' '.join(command)}; echo EXIT=$?; sleep 600"
        self.tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "60", shell)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-200")

    def wait_exit(self, timeout: float) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            found = re.search(r"^EXIT=(\d+)$", text, re.M)
            if found:
                return int(found.group(1)), text
            time.sleep(0.3)
        raise AssertionError(f"the command did not finish:\n{self.screen()}")

    def kill(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    session = Tmux()
    try:
        yield session
    finally:
        session.kill()


def _env() -> dict[str, str]:
    keep = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    return {**keep, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "200"}


def _work(worker: int) -> None:
    for seq in range(PER_WORKER):
        zstream_mp.publish(
            {"worker": f"worker-{worker}", "seq": seq, "done": seq + 1, "total": PER_WORKER},
            kind="progress",
        )
        if seq % 10 == 0:
            zstream_mp.publish({"worker": f"worker-{worker}", "seq": seq}, kind="token")
        time.sleep(0.005)


def test_tail_live_draws_one_bar_per_worker_matching_the_server(
    server: RunningServer, tmux: Tmux
) -> None:
    run_id = create_run(server.url)
    tmux.start(
        [sys.executable, "-m", "zstream_mp", "tail", run_id, "--server", server.url, "--live"],
        _env(),
    )
    deadline = time.monotonic() + 20
    while zstream_mp.runs.run_status(server.url, run_id).subscribers < 1:
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.1)
    zstream_mp.bind(run_id, server=server.url)
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        pool.map(_work, range(WORKERS))
        pool.close()
        pool.join()
    zstream_mp.unbind()
    end_run(server.url, run_id)
    code, text = tmux.wait_exit(60)
    assert code == 0, text

    held = Counter(
        e.payload["worker"] for e in zstream_mp.subscribe(server.url, run_id) if hasattr(e, "kind")
    )
    rows = {m["name"]: m for m in ROW.finditer(text)}
    assert sorted(rows) == [f"worker-{w}" for w in range(WORKERS)], text
    for name, row in rows.items():
        assert int(row["events"]) == held[name] == PER_WORKER + PER_WORKER // 10, (name, text)
        assert (int(row["done"]), int(row["total"])) == (PER_WORKER, PER_WORKER)
        assert row["dropped"] == "0"
    assert f"events {sum(held.values())}" in text and "run ended" in text
    Path(REPO / "tests" / "_artifacts").mkdir(exist_ok=True)
    (REPO / "tests" / "_artifacts" / "tail_live.txt").write_text(text)


def test_demo_draws_one_bar_per_worker_matching_its_tally(tmux: Tmux) -> None:
    pytest.importorskip("joblib")
    tmux.start(
        [sys.executable, "-m", "zstream_mp", "demo", "--tokens", "40", "--delay", "0.002"], _env()
    )
    code, text = tmux.wait_exit(180)
    assert code == 0, text
    rows = {m["name"]: m for m in ROW.finditer(text)}
    names = [f"pool-{i}" for i in range(4)] + [f"joblib-{i}" for i in range(2)]
    assert sorted(rows) == sorted(names), text
    for name in names:
        row = rows[name]
        # what the server streamed for the worker: 40 tokens, 4 progress, 1 status
        assert int(row["events"]) == 45, (name, text)
        assert (int(row["done"]), int(row["total"])) == (40, 40)
        assert row["dropped"] == "0"
    assert "every event delivered exactly once" in text
    total = re.search(r"^\s+total\s+(\d+)\s+(\d+)$", text, re.M)
    assert total and total.group(1) == total.group(2) == str(45 * 6 + 2), text
    Path(REPO / "tests" / "_artifacts").mkdir(exist_ok=True)
    (REPO / "tests" / "_artifacts" / "demo.txt").write_text(text)
