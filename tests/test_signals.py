"""SIGTERM in multiprocessing children: flushed first, then what the signal did before.

`Pool.terminate()`, `with Pool()` and joblib's multiprocessing backend end workers with
SIGTERM. A worker's exit hooks never run on that path unless a handler turns it into an
orderly exit, and the handler must reach the main thread even while the sender thread is
busy, keep a handler the program installed, and leave an ignored SIGTERM ignored.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faultserver import FaultProcess
from programs.fork.signal_child import publish_then_wait, report_masks

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, POSIX signals")
CTX = multiprocessing.get_context("spawn")
EVENTS = 300


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[FaultProcess]:
    """Accepts every batch, each after 50 ms: a SIGTERM finds events still queued."""
    with FaultProcess(tmp_path / "rec", script=[{"action": "accept", "delay": 0.05}]) as fp:
        yield fp


def _seqs(fp: FaultProcess, run_id: str) -> list[int]:
    return sorted(r["event"]["payload"]["seq"] for r in fp.accepted() if r["run"] == run_id)


def _start(
    fp: FaultProcess, disposition: str, marker: Path
) -> tuple[multiprocessing.Process, object, str, int]:
    run_id = str(uuid.uuid4())
    parent, child = CTX.Pipe()
    proc = CTX.Process(
        target=publish_then_wait, args=(fp.url, run_id, EVENTS, child, disposition, str(marker))
    )
    proc.start()
    assert parent.poll(30), "the child did not publish"
    queued = parent.recv()
    return proc, parent, run_id, queued


def test_sender_thread_blocks_asynchronous_signals() -> None:
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(4)
    try:
        parent, child = CTX.Pipe()
        proc = CTX.Process(
            target=report_masks,
            args=(f"http://127.0.0.1:{stall.getsockname()[1]}", str(uuid.uuid4()), child),
        )
        proc.start()
        assert parent.poll(30)
        masks = parent.recv()
        proc.join(10)
    finally:
        stall.close()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        bit = 1 << (sig - 1)
        assert masks["sender"] & bit, f"{sig!r} not blocked in the sender thread"
        assert not masks["main"] & bit, f"{sig!r} blocked in the main thread"


def test_sigterm_flushes_then_terminates(slow_server: FaultProcess, tmp_path: Path) -> None:
    proc, _conn, run_id, queued = _start(slow_server, "default", tmp_path / "m")
    assert queued > 0, "precondition: events still queued when SIGTERM arrives"
    started = time.monotonic()
    proc.terminate()
    proc.join(10)
    assert proc.exitcode == -signal.SIGTERM, proc.exitcode
    assert time.monotonic() - started < 2.0 + 1.0  # the exit budget, plus process teardown
    assert _seqs(slow_server, run_id) == list(range(EVENTS))


def test_program_sigterm_handler_still_runs(slow_server: FaultProcess, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc, _conn, run_id, _queued = _start(slow_server, "own", marker)
    proc.terminate()
    proc.join(10)
    assert proc.exitcode == 3, "the program's own handler did not run"
    assert marker.read_text() == str(EVENTS), "it ran before the flush"
    assert _seqs(slow_server, run_id) == list(range(EVENTS))


def test_ignored_sigterm_stays_ignored(slow_server: FaultProcess, tmp_path: Path) -> None:
    proc, conn, run_id, _queued = _start(slow_server, "ignore", tmp_path / "m")
    proc.terminate()
    proc.join(1.5)
    assert proc.is_alive(), "an ignored SIGTERM became fatal"
    conn.send("finish")  # type: ignore[attr-defined]
    proc.join(10)
    assert proc.exitcode == 0
    assert _seqs(slow_server, run_id) == list(range(EVENTS))


def test_sigterm_while_main_thread_is_stuck_in_c(slow_server: FaultProcess) -> None:
    """The handler cannot run until the C call returns; the watcher flushes and exits."""
    from programs.fork.signal_child import publish_then_compute

    run_id = str(uuid.uuid4())
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=publish_then_compute, args=(slow_server.url, run_id, EVENTS, child))
    proc.start()
    assert parent.poll(30), "the child did not publish"
    assert parent.recv() > 0, "precondition: events still queued when SIGTERM arrives"
    time.sleep(0.2)  # now inside pbkdf2_hmac
    started = time.monotonic()
    proc.terminate()
    proc.join(10)
    took = time.monotonic() - started
    assert proc.exitcode == 128 + signal.SIGTERM, proc.exitcode
    assert took < 2.0 + 1.0, f"took {took:.1f}s"
    assert _seqs(slow_server, run_id) == list(range(EVENTS))
