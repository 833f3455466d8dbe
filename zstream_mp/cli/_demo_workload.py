"""The demo: a step-like workload that fans out, watched live through the SSE stream.

It starts `zstream-mp serve` on a free loopback port (through `_serve_process`), binds
a new run, fans work out over a `multiprocessing.Pool` and joblib, and draws one progress
bar per worker from what the server streams back (not from local state). It ends with a
tally per process: what each one published, what the server delivered, and what was
dropped and why.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, TextIO

import zstream_mp
from zstream_mp.cli._dashboard import Dashboard, Tally
from zstream_mp.cli._serve_process import start_serve
from zstream_mp.runs import create_run, end_run

_WORDS = ("stream", "every", "token", "from", "every", "worker", "exactly", "once")


def generate(worker: str, tokens: int, delay: float) -> dict[str, Any]:
    """A stand-in for an LLM call in a worker: token events, progress, then a status."""
    pid = os.getpid()
    for i in range(tokens):
        zstream_mp.publish(
            {"worker": worker, "pid": pid, "text": _WORDS[i % len(_WORDS)]},
            kind="token",
            correlation_id=worker,
            index=i,
        )
        if (i + 1) % 10 == 0 or i + 1 == tokens:
            zstream_mp.publish(
                {"worker": worker, "pid": pid, "done": i + 1, "total": tokens},
                kind="progress",
                correlation_id=worker,
            )
        time.sleep(delay)
    dropped = sum(zstream_mp.stats().dropped.values())
    zstream_mp.publish(
        {"worker": worker, "pid": pid, "state": "finished", "dropped": dropped},
        kind="status",
        correlation_id=worker,
    )
    snap = zstream_mp.stats()
    return {
        "worker": worker,
        "pid": pid,
        "published": snap.published,
        "dropped": dict(snap.dropped),
    }


@dataclass
class _View:
    """What the SSE stream has shown so far, per process (the tally's side)."""

    delivered_by_pid: Counter[int] = field(default_factory=Counter)
    total_events: int = 0
    gaps: list[str] = field(default_factory=list)
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _watch(server: str, run_id: str, view: _View, tally: Tally) -> None:
    for item in zstream_mp.subscribe(server, run_id, timeout=30.0):
        tally.add(item)
        with view.lock:
            if isinstance(item, zstream_mp.consumer.Gap):
                view.gaps.append(item.reason)
                continue
            view.total_events += 1
            pid = item.payload.get("pid")
            if isinstance(pid, int):
                view.delivered_by_pid[pid] += 1
    with view.lock:
        view.ended = True
    tally.state = "run ended"


def run(
    *,
    pool_workers: int = 4,
    joblib_workers: int = 2,
    tokens: int = 120,
    delay: float = 0.01,
    out: TextIO = sys.stdout,
    plain: bool | None = None,
    keep: bool = False,
) -> int:
    """Run the demo; returns 0 when every published event was delivered exactly once.

    `plain` forces summary lines (True) or bars (False); None draws bars on a terminal.
    `keep` leaves the server (and so the run's page) up after the tally until Ctrl-C.
    """
    with start_serve(["--heartbeat", "1"]) as served:
        server = served.url
        run_id = create_run(server)
        out.write(
            f"zstream-mp demo\n  server: {server}\n  run:    {run_id}\n"
            f"  follow it elsewhere: zstream-mp tail {run_id} --server {server} --live\n"
            f"  or in a browser:     {server}/runs/{run_id}\n\n"
        )
        zstream_mp.bind(run_id, server=server, step_name="demo_step")
        zstream_mp.publish({"pid": os.getpid(), "state": "fan-out starting"}, kind="status")

        view = _View()
        tally = Tally()
        watcher = threading.Thread(target=_watch, args=(server, run_id, view, tally), daemon=True)
        watcher.start()
        pool_names = [f"pool-{i}" for i in range(pool_workers)]
        joblib_names = [f"joblib-{i}" for i in range(joblib_workers)]
        results: list[dict[str, Any]] = []
        done = threading.Event()

        def workload() -> None:
            try:
                _fan_out(pool_names, joblib_names, tokens, delay, results)
            finally:
                done.set()

        worker_thread = threading.Thread(target=workload, daemon=True)
        with Dashboard(tally, out, f"demo run {run_id}", plain=plain):
            worker_thread.start()
            done.wait()
            zstream_mp.publish({"pid": os.getpid(), "state": "fan-out finished"}, kind="status")
            zstream_mp.flush(5.0)
            expected = _expected(results) + zstream_mp.stats().published
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                with view.lock:
                    if view.total_events >= expected:
                        break
                time.sleep(0.1)
            end_run(server, run_id)
            watcher.join(10)
        code = _tally(results, view, out)
        if keep:
            _keep_serving(server, run_id, out)
        return code


def _keep_serving(server: str, run_id: str, out: TextIO) -> None:
    """`--keep`: the page link printed at the start stays alive until Ctrl-C or SIGTERM."""
    out.write(
        f"\n  the server stays up (Ctrl-C to stop it):\n"
        f"    live page: {server}/runs/{run_id}\n"
        f"    terminal:  zstream-mp tail {run_id} --server {server}\n"
    )
    out.flush()
    stop = threading.Event()
    # Both handlers are set here: a shell that starts a background job without job control
    # makes it ignore SIGINT, and Python then never raises KeyboardInterrupt for Ctrl-C.
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _fan_out(
    pool_names: list[str],
    joblib_names: list[str],
    tokens: int,
    delay: float,
    results: list[dict[str, Any]],
) -> None:
    import multiprocessing

    with multiprocessing.get_context().Pool(len(pool_names)) as pool:
        results += pool.starmap(generate, [(name, tokens, delay) for name in pool_names])
        pool.close()
        pool.join()
    try:
        from joblib import Parallel, delayed
    except ImportError:
        return
    results += Parallel(n_jobs=len(joblib_names))(
        delayed(generate)(name, tokens, delay) for name in joblib_names
    )


def _expected(results: list[dict[str, Any]]) -> int:
    per_pid: dict[int, int] = {}
    for result in results:  # published is cumulative per process: keep its largest value
        per_pid[result["pid"]] = max(per_pid.get(result["pid"], 0), result["published"])
    return sum(per_pid.values())


def _tally(results: list[dict[str, Any]], view: _View, out: TextIO) -> int:
    per_pid: dict[int, dict[str, Any]] = {}
    roles: dict[int, list[str]] = defaultdict(list)
    for result in results:
        pid = result["pid"]
        roles[pid].append(result["worker"])
        if result["published"] >= per_pid.get(pid, {}).get("published", -1):
            per_pid[pid] = result
    parent = zstream_mp.stats()
    per_pid[parent.pid] = {"published": parent.published, "dropped": dict(parent.dropped)}
    roles[parent.pid].append("parent")
    out.write("\n  per-process tally (published by the process, delivered as seen over SSE)\n")
    out.write(f"  {'pid':>7}  {'role':<18} {'published':>9} {'delivered':>9}  dropped\n")
    ok = not view.gaps
    for pid, result in sorted(per_pid.items()):
        delivered = view.delivered_by_pid.get(pid, 0)
        drops = {k: v for k, v in result["dropped"].items() if v}
        ok = ok and delivered == result["published"]
        role = ",".join(roles[pid])
        out.write(
            f"  {pid:>7}  {role:<18} {result['published']:>9} {delivered:>9}  {drops or 'none'}\n"
        )
    total_pub = sum(r["published"] for r in per_pid.values())
    out.write(f"  {'total':>7}  {'':<18} {total_pub:>9} {view.total_events:>9}\n")
    if view.gaps:
        out.write(f"  the stream reported gaps: {view.gaps}\n")
    out.write(
        "\n  every event delivered exactly once\n"
        if ok
        else "\n  some events were not delivered; see the tally above\n"
    )
    return 0 if ok else 1
