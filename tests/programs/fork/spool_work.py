"""Worker functions for the registry and spool tests (importable by spawn/forkserver children)."""

from __future__ import annotations

import json
import multiprocessing.util
import os
import signal
import time
from typing import Any

import zstream_mp


def mark_exit_times(marks: str) -> None:
    """Pool initializer: record when this worker's exit hooks start and end."""

    def first() -> None:
        _write(marks, "t0", time.monotonic())

    def last() -> None:
        _write(marks, "t1", time.monotonic())

    multiprocessing.util.Finalize(None, first, exitpriority=10_000)
    multiprocessing.util.Finalize(None, last, exitpriority=1)


def _write(marks: str, name: str, value: float) -> None:
    with open(os.path.join(marks, f"{os.getpid()}.{name}"), "w") as fh:
        fh.write(repr(value))


def publish_burst(args: tuple[str, int]) -> zstream_mp.PublisherStats:
    worker, n = args
    for seq in range(n):
        zstream_mp.publish({"worker": worker, "seq": seq})
    return zstream_mp.stats()


def publish_forever(worker: str, progress: Any) -> None:
    """Publish as fast as possible; `progress.value` is the last seq publish() returned for."""
    seq = 0
    while True:
        zstream_mp.publish({"worker": worker, "seq": seq})
        progress.value = seq
        seq += 1


def publish_then_os_exit(worker: str, n: int) -> None:
    for seq in range(n):
        zstream_mp.publish({"worker": worker, "seq": seq})
    os._exit(0)


def publish_then_hang(worker: str, n: int, ready: Any) -> None:
    for seq in range(n):
        zstream_mp.publish({"worker": worker, "seq": seq})
    ready.set()
    signal.pause()


def nested(args: tuple[str, int]) -> int:
    """A pool worker that runs a pool of its own."""
    worker, n = args
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(publish_burst, [(f"{worker}.{i}", n) for i in range(2)])
        pool.close()
        pool.join()
    publish_burst((worker, n))
    return os.getpid()


def dump(path: str, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh)
