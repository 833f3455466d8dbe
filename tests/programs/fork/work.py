"""Worker bodies for the fork matrix, importable by every kind of child process.

Workers never bind and never flush: the run context must reach them from the parent, and
the library's exit hooks must deliver what they published.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import sys

from zstream_mp import publish

EVENTS = int(os.environ.get("FORK_CASE_EVENTS", "500"))
GRANDCHILD_EVENTS = int(os.environ.get("FORK_CASE_GRANDCHILD_EVENTS", "250"))
TAG = os.environ.get("FORK_CASE_TAG", "")
"""Distinguishes the events of one case when several cases share a run."""


DEBUG = os.environ.get("FORK_CASE_DEBUG", "0")
"""1: print each worker's stats at exit; 2: also log at DEBUG level."""
_debug_pids: set[int] = set()


def _report(tag: str, pid: int) -> None:
    if os.getpid() == pid:
        from zstream_mp import stats

        print(f"[fork-case] worker {tag} pid {pid} at exit: {stats()}", file=sys.stderr, flush=True)


def _debug(tag: str, pid: int) -> None:
    """Print this process's stats at exit (after the library's own exit flush)."""
    if pid in _debug_pids:
        return
    _debug_pids.add(pid)
    import atexit
    import logging

    if DEBUG == "2":
        logging.basicConfig(level=logging.DEBUG, format=f"[{pid}] %(name)s %(message)s")
    atexit.register(_report, tag, pid)


def work(worker: object, count: int | None = None) -> int:
    """Publish `count` events tagged (worker, seq); return this process id."""
    tag = str(worker)
    pid = os.getpid()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks on a deadline
    if DEBUG != "0":
        _debug(tag, pid)
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
