"""Parent programs of the fault-model suite (tests/recovery/test_fault_model.py).

    python faultcase.py CASE --server URL --run RUN --token T --dir DIR [options]

The program binds the run (`--durable`: `durable=True`), makes its children fail the way
the CASE says, then lets the adopter named by `--adopter` deliver what they left:
`flush_tree` (`flush_tree()` with its default timeout, or `--tree-timeout`; its result
and duration in the report), `exit` (the program returns normally: its exit hooks are the
adopter) or `none`. `DIR` holds the files the test and the program use to take turns
(`children-done`, `go`, ...).

CASEs:
  forks          the parent publishes `--parent-before` events (producer `parent`), then
                 `--children` os.fork children publish `--events` each; a child then
                 calls `flush(--child-flush)` if given, and leaves by `--child-exit`
                 (`normal`: its exit hooks run; `os_exit`: they do not)
  kill           `--workers` multiprocessing Processes publish up to `--cap` events each;
                 once they published `--kill-at` in all, each is SIGKILLed
  terminate      a `Pool(--workers)` publishes like `kill`; `Pool.terminate()` (SIGTERM)
  before_bind    `Pool(4)` is created, then the run is bound, then `map()` publishes
  orphans        `--children` children (`--how fork|exec`) wait until the parent is gone,
                 then publish and exit; the parent exits at once
  orphan_child   (internal) the body of an exec'd orphan: no bind, the context is inherited
  late_children  binds, publishes, waits for `DIR/first-gone`, then a `Pool(2)` publishes

`--method` sets `multiprocessing.set_start_method(METHOD, force=True)` first (forkserver is
Python 3.14's default on Linux). The last stdout line is a JSON report.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zstream_mp
from programs.faults.fault_client import OneLine, snapshot
from programs.faults.fault_work import burst, burst_task, capped_process, capped_task, init_progress

HERE = Path(__file__).resolve()


def wait_file(path: Path, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def adopt(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.adopter == "flush_tree":
        started = time.monotonic()
        if args.tree_timeout is None:  # as users call it: the default timeout
            report["flush_tree"] = zstream_mp.flush_tree()
        else:
            report["flush_tree"] = zstream_mp.flush_tree(args.tree_timeout)
        report["flush_tree_s"] = round(time.monotonic() - started, 2)
        tree = zstream_mp.stats("tree")
        report["tree"] = {
            "published": tree.published,
            "sent": tree.sent,
            "spooled": tree.spooled,
            "spool_sent": tree.spool_sent,
            "spool_pending": tree.spool_pending,
            "dropped": dict(tree.dropped),
        }


# --------------------------------------------------------------------------- cases


def forks(args: argparse.Namespace, report: dict[str, Any]) -> None:
    # what the parent queued before the fork is the parent's: a child must not send it
    burst("parent", args.parent_before)
    pids = []
    for i in range(args.children):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                burst(f"c{i}", args.events)
                if args.child_flush is not None:
                    zstream_mp.flush(args.child_flush)
            except BaseException:
                code = 1
            if args.child_exit == "os_exit":
                os._exit(code)
            sys.exit(code)
        pids.append(pid)
    report["child_exits"] = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]


def _wait_progress(values: list[int] | Any, n: int, kill_at: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = [int(values[i]) for i in range(n)]
        if min(now) >= 50 and sum(now) >= kill_at:
            return
        time.sleep(0.002)


def kill(args: argparse.Namespace, report: dict[str, Any]) -> None:
    progress = [multiprocessing.Value("q", -1, lock=False) for _ in range(args.workers)]
    procs = [
        multiprocessing.Process(
            target=capped_process, args=(f"w{i}", progress[i], args.cap), daemon=True
        )
        for i in range(args.workers)
    ]
    for p in procs:
        p.start()

    class View:
        def __getitem__(self, i: int) -> int:
            return int(progress[i].value)

    _wait_progress(View(), args.workers, args.kill_at)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
    for p in procs:
        p.join()
    report["returned"] = {f"w{i}": int(progress[i].value) for i in range(args.workers)}


def terminate(args: argparse.Namespace, report: dict[str, Any]) -> None:
    progress = multiprocessing.Array("q", [-1] * args.workers, lock=False)
    pool = multiprocessing.Pool(args.workers, initializer=init_progress, initargs=(progress,))
    tasks = [(i, f"w{i}", args.cap) for i in range(args.workers)]
    pool.map_async(capped_task, tasks, chunksize=1)
    _wait_progress(progress, args.workers, args.kill_at)
    pool.terminate()
    pool.join()
    report["returned"] = {f"w{i}": int(progress[i]) for i in range(args.workers)}


def before_bind(args: argparse.Namespace, report: dict[str, Any]) -> None:
    # the caller binds after this pool exists: see main()
    pool = multiprocessing.Pool(4)
    _bind(args)
    report["worker_pids"] = pool.map(
        burst_task, [(f"w{i}", args.events) for i in range(4)], chunksize=1
    )
    pool.close()
    pool.join()


def orphans(args: argparse.Namespace, report: dict[str, Any]) -> None:
    pids = []
    for i in range(args.children):
        if args.how == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    wait_file(Path(args.dir) / "parent-gone")
                    burst(f"c{i}", args.events)
                except BaseException:
                    code = 1
                sys.exit(code)
        else:
            cmd = [sys.executable, str(HERE), "orphan_child", "--dir", args.dir]
            cmd += ["--worker", f"c{i}", "--events", str(args.events)]
            pid = subprocess.Popen(cmd, stdout=subprocess.DEVNULL).pid
        pids.append(pid)
    (Path(args.dir) / "children.json").write_text(json.dumps(pids))


def orphan_child(args: argparse.Namespace) -> None:
    wait_file(Path(args.dir) / "parent-gone")
    burst(args.worker, args.events)


def late_children(args: argparse.Namespace, report: dict[str, Any]) -> None:
    burst("second", args.events)
    (Path(args.dir) / "second-bound").touch()
    report["first_gone"] = wait_file(Path(args.dir) / "first-gone")
    with multiprocessing.Pool(2) as pool:
        pool.map(burst_task, [(f"second.c{i}", args.events) for i in range(2)], chunksize=1)
        pool.close()
        pool.join()


CASES = {
    "forks": forks,
    "kill": kill,
    "terminate": terminate,
    "before_bind": before_bind,
    "orphans": orphans,
    "late_children": late_children,
}


def _bind(args: argparse.Namespace) -> None:
    zstream_mp.bind(args.run, server=args.server, token=args.token, durable=args.durable)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=[*CASES, "orphan_child"])
    parser.add_argument("--server")
    parser.add_argument("--run")
    parser.add_argument("--token")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--method", default=None)
    parser.add_argument("--adopter", choices=["flush_tree", "exit", "none"], default="none")
    parser.add_argument("--tree-timeout", type=float, default=None)
    parser.add_argument("--wait-go", action="store_true", help="wait for DIR/go before adopting")
    parser.add_argument("--parent-publish", type=int, default=0)
    parser.add_argument("--parent-before", type=int, default=0)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--cap", type=int, default=2000)
    parser.add_argument("--kill-at", type=int, default=2000)
    parser.add_argument("--child-flush", type=float, default=None)
    parser.add_argument("--child-exit", choices=["normal", "os_exit"], default="normal")
    parser.add_argument("--how", choices=["fork", "exec"], default="fork")
    parser.add_argument("--worker", default="solo")
    args = parser.parse_args()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine("%(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    logging.captureWarnings(True)

    if args.case == "orphan_child":
        orphan_child(args)
        return
    if args.method:
        multiprocessing.set_start_method(args.method, force=True)
    report: dict[str, Any] = {"pid": os.getpid()}
    if args.case != "before_bind":
        _bind(args)
    CASES[args.case](args, report)
    (Path(args.dir) / "children-done").touch()
    if args.wait_go:
        report["go"] = wait_file(Path(args.dir) / "go")
    if args.parent_publish:
        burst("parent-late", args.parent_publish)
    adopt(args, report)
    report["stats"] = snapshot()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
