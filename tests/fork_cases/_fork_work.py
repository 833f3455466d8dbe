"""Worker bodies for the fork matrix, importable by every kind of child process.

Workers never bind and never flush: the run context must reach them from the parent, and
the library's exit hooks must deliver what they published.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

from zstream_mp import publish

EVENTS = int(os.environ.get("FORK_CASE_EVENTS", "500"))
GRANDCHILD_EVENTS = int(os.environ.get("FORK_CASE_GRANDCHILD_EVENTS", "250"))
TAG = os.environ.get("FORK_CASE_TAG", "")
"""Distinguishes the events of one case when several cases share a run."""


def work(worker: object, count: int | None = None) -> int:
    """Publish ``count`` events tagged (worker, seq); return this process id."""
    tag = str(worker)
    pid = os.getpid()
    for seq in range(EVENTS if count is None else count):
        publish({"worker": tag, "seq": seq, "pid": pid, "tag": TAG})
    return pid


def nested_process_worker(worker: int) -> None:
    """A multiprocessing child that starts its own child; both publish."""
    ctx = multiprocessing.get_context("fork")
    grandchild = ctx.Process(target=work, args=(f"{worker}/g", GRANDCHILD_EVENTS))
    grandchild.start()
    work(worker)
    grandchild.join()
    if grandchild.exitcode != 0:
        sys.exit(4)
