"""Worker bodies of the fault-model programs, importable by fork, spawn and forkserver children.

Every event is `{"w": <producer>, "seq": <n>}`: the suite counts the server's history by
that identity. Workers never bind: the run reaches them from the process that bound it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import zstream_mp

_progress: Any = None
"""A shared array of int64, one slot per worker: the last seq publish() returned for."""


def burst(worker: str, n: int) -> None:
    for seq in range(n):
        zstream_mp.publish({"w": worker, "seq": seq})


def burst_task(args: tuple[str, int]) -> int:
    """A pool task: publish `n` events as `worker`; return this process id."""
    worker, n = args
    burst(worker, n)
    return os.getpid()


def init_progress(progress: Any) -> None:
    """Pool initializer: keep the shared progress array."""
    global _progress
    _progress = progress


def capped_task(args: tuple[int, str, int]) -> None:
    """A pool task: publish up to `cap` events, recording progress, then wait to be ended."""
    slot, worker, cap = args
    for seq in range(cap):
        zstream_mp.publish({"w": worker, "seq": seq})
        _progress[slot] = seq
    while True:
        time.sleep(1)


def capped_process(worker: str, progress: Any, cap: int) -> None:
    """A Process target: like `capped_task` with its own shared value."""
    for seq in range(cap):
        zstream_mp.publish({"w": worker, "seq": seq})
        progress.value = seq
    while True:
        time.sleep(1)
