"""Bodies of the multiprocessing children in tests/test_signals.py (importable under spawn)."""

from __future__ import annotations

import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType

from zstream_mp import bind, publish, stats


def _sig_mask(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise RuntimeError("no SigBlk line")


def report_masks(server: str, run_id: str, conn: Connection) -> None:
    """Publish to a server that never answers, then report each thread's blocked signals."""
    import threading

    bind(run_id, server=server)
    publish({"n": 0})
    deadline = time.monotonic() + 5
    sender = None
    while sender is None and time.monotonic() < deadline:
        sender = next((t for t in threading.enumerate() if t.name == "zstream-mp-sender"), None)
        time.sleep(0.01)
    assert sender is not None and sender.native_id is not None
    conn.send(
        {
            "main": _sig_mask(threading.main_thread().native_id or os.getpid()),
            "sender": _sig_mask(sender.native_id),
        }
    )
    os._exit(0)


def publish_then_wait(
    server: str, run_id: str, events: int, conn: Connection, disposition: str, marker: str
) -> None:
    """Set a SIGTERM disposition, publish, say so, then sleep in a system call."""
    if disposition == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif disposition == "own":

        def own(signum: int, frame: FrameType | None) -> None:
            Path(marker).write_text(str(stats().sent))
            os._exit(3)

        signal.signal(signal.SIGTERM, own)
    bind(run_id, server=server)
    for seq in range(events):
        publish({"seq": seq, "pid": os.getpid()})
    conn.send(stats().queued)
    # Asleep in the kernel, as an idle pool worker is; SIGTERM must still reach this thread.
    if conn.poll(60):
        conn.recv()
    sys.exit(0)


def publish_then_compute(server: str, run_id: str, events: int, conn: Connection) -> None:
    """Publish, then sit in a long C call that never returns to the interpreter on a signal."""
    import hashlib

    bind(run_id, server=server)
    for seq in range(events):
        publish({"seq": seq, "pid": os.getpid()})
    conn.send(stats().queued)
    hashlib.pbkdf2_hmac("sha256", b"secret", b"salt", 100_000_000)  # tens of seconds, in C
    sys.exit(0)
