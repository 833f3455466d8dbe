"""Run one executor case of the fork matrix in a fresh interpreter.

    python driver.py CASE --server URL --run RUN_ID [--token TOKEN]
                     [--workers 4] [--parent-events 1000]

The parent binds the run, publishes `parent-events` events tagged worker='parent' right
before fanning out (so its queue is not empty at fork time), runs the executor, publishes
as many again and exits without flushing: the library's exit hooks must deliver. The last
line on stdout is a JSON summary. Exit status 0 means every worker reported success; the
caller owns the deadline and counts the events at the server.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
from collections.abc import Callable

from programs.fork.work import GRANDCHILD_EVENTS, TAG, nested_process_worker, work
from zstream_mp import bind, flush, publish, stats

WORKERS = 4


def _wait_children(pids: list[int]) -> None:
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"child {pid} exited with {code}")


def case_osfork_sysexit() -> None:
    pids = []
    for w in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            work(w)
            sys.exit(0)
        pids.append(pid)
    _wait_children(pids)


def case_osfork_flush_exit() -> None:
    pids = []
    for w in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            work(w)
            ok = flush(timeout=30)
            os._exit(0 if ok else 5)
        pids.append(pid)
    _wait_children(pids)


def case_nested_osfork() -> None:
    pids = []
    for w in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            grandchild = os.fork()
            if grandchild == 0:
                work(f"{w}/g", GRANDCHILD_EVENTS)
                sys.exit(0)
            work(w)
            _wait_children([grandchild])
            sys.exit(0)
        pids.append(pid)
    _wait_children(pids)


def case_nested_process() -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=nested_process_worker, args=(w,)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise SystemExit(f"workers failed: {bad}")


def _pool(method: str, *, with_block: bool = False, maxtasks: int | None = None) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context(method)
    if with_block:
        with ctx.Pool(WORKERS) as pool:  # __exit__ terminates: workers get SIGTERM
            pool.map(work, range(WORKERS), chunksize=1)
        return
    pool = ctx.Pool(WORKERS, maxtasksperchild=maxtasks)
    pool.map(work, range(WORKERS), chunksize=1)
    pool.close()
    pool.join()


def _ppe(method: str) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(WORKERS, mp_context=ctx) as ex:
        list(ex.map(work, range(WORKERS)))


def _joblib(backend: str) -> None:
    from joblib import Parallel, delayed

    Parallel(n_jobs=WORKERS, backend=backend)(delayed(work)(w) for w in range(WORKERS))


def case_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(WORKERS) as ex:
        list(ex.map(work, range(WORKERS)))


CASES: dict[str, Callable[[], None]] = {
    "osfork_sysexit": case_osfork_sysexit,
    "osfork_flush_exit": case_osfork_flush_exit,
    # Forks at once after a short first burst: the parent's sender is still building its
    # first HTTP client (about 30 ms where TLS initialises) when the children start.
    "osfork_after_burst": case_osfork_flush_exit,
    "pool_fork": lambda: _pool("fork"),
    "pool_forkserver": lambda: _pool("forkserver"),
    "pool_spawn": lambda: _pool("spawn"),
    "pool_with_fork": lambda: _pool("fork", with_block=True),
    "pool_with_spawn": lambda: _pool("spawn", with_block=True),
    "pool_maxtasks1": lambda: _pool("fork", maxtasks=1),
    "ppe_fork": lambda: _ppe("fork"),
    "ppe_forkserver": lambda: _ppe("forkserver"),
    "ppe_spawn": lambda: _ppe("spawn"),
    "joblib_loky": lambda: _joblib("loky"),
    "joblib_multiprocessing": lambda: _joblib("multiprocessing"),
    "nested_osfork": case_nested_osfork,
    "nested_process": case_nested_process,
    "threads": case_threads,
}

PARENT_EVENTS = {"osfork_after_burst": 50}
"""Events the parent publishes before (and again after) the fan-out, where not the default."""

# Identities each case publishes besides the parent's: worker tag -> number of events.
NESTED = {"nested_osfork", "nested_process"}


def expected_workers(case: str, events: int, grandchild_events: int) -> dict[str, int]:
    out = {str(w): events for w in range(WORKERS)}
    if case in NESTED:
        out.update({f"{w}/g": grandchild_events for w in range(WORKERS)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--server", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--token", default=None)
    parser.add_argument("--parent-events", type=int, default=1000)
    args = parser.parse_args()

    parent = os.getpid()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks on a deadline
    if os.environ.get("FORK_CASE_DEBUG", "0") != "0":
        import atexit

        # Registered before the first publish, so it runs after the library's exit flush.
        atexit.register(
            lambda: print(f"[fork-case] parent at exit: {stats()}", file=sys.stderr, flush=True)
        )
    bind(args.run, server=args.server, token=args.token)
    for seq in range(args.parent_events):
        publish({"worker": "parent", "seq": seq, "pid": parent, "tag": TAG})
    queued_at_fork = stats().queued
    CASES[args.case]()
    for seq in range(args.parent_events, 2 * args.parent_events):
        publish({"worker": "parent", "seq": seq, "pid": parent, "tag": TAG})
    st = stats()
    summary = {
        "case": args.case,
        "python": sys.version.split()[0],
        "pid": parent,
        "queued_at_fork": queued_at_fork,
        "published": st.published,
        "dropped": dict(st.dropped),
    }
    print(json.dumps(summary), flush=True)
    # No flush(): the exit hooks deliver the parent's second half.


if __name__ == "__main__":
    main()
