"""What an active publisher adds to `os.fork()`, and how fast a Pool(4) delivers.

Prints, from one run:
* the parent's `os.fork()` call, the whole fork round trip (fork, child `os._exit`,
  `waitpid`) and the child's first `publish()`, in a process without zstream-mp, with it
  imported but unused, and with an active publisher (bound, its sender thread alive), once
  waiting for work and once sending 50 events per fork (the sender then shares the GIL
  with the forking thread, which the fork call's time includes);
* events/s delivered from `multiprocessing.Pool(4)` to our server (workers do not flush at
  the end: their exit hooks deliver), counted on the server, next to the server's ingest
  ceiling measured in the same run.

Usage: python benchmarks/forks.py [--forks N] [--events N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import ingest_ceiling, new_run, run_child, server, table  # noqa: E402

BURST = 4000


def _child_fork_cost(mode: str, url: str, forks: int) -> dict[str, float]:
    """Medians in µs: parent fork() call, round trip, child's first publish (if any)."""
    publish = None
    if mode != "plain":
        import zstream_mp

        publish = zstream_mp.publish
        if mode.startswith("active"):
            zstream_mp.bind(new_run(url), server=url)
            for j in range(50):
                publish({"warm": j})
            zstream_mp.flush(10)  # the sender thread stays up (ZSTREAM_IDLE_EXIT=600)
    calls, trips, firsts = [], [], []
    for i in range(forks):
        if mode == "active-busy":  # keep events in flight and the sender thread busy
            for j in range(50):
                publish({"i": i, "j": j})  # type: ignore[misc]
        r, w = os.pipe()
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            spent = 0
            if publish is not None:
                c0 = time.perf_counter_ns()
                publish({"child": i})
                spent = time.perf_counter_ns() - c0
            os.write(w, str(spent).encode())
            os._exit(0)
        t1 = time.perf_counter_ns()
        os.close(w)
        first = int(os.read(r, 64) or b"0")
        os.close(r)
        os.waitpid(pid, 0)
        t2 = time.perf_counter_ns()
        calls.append((t1 - t0) / 1000)
        trips.append((t2 - t0) / 1000)
        firsts.append(first / 1000)
    return {
        "call": statistics.median(calls),
        "trip": statistics.median(trips),
        "first": statistics.median(firsts),
    }


def _child_same_process(url: str, forks: int) -> dict[str, float]:
    """Fork call medians in one process: first with zstream-mp unused, then active.

    Same process, same heap: the difference is what an active publisher adds. Also times
    the publisher's own after-fork hook, called directly in a child.
    """
    import zstream_mp
    from zstream_mp import _forksafe

    def calls(publish_between: bool) -> float:
        out = []
        for i in range(forks):
            if publish_between:
                for j in range(50):
                    zstream_mp.publish({"i": i, "j": j})
            t0 = time.perf_counter_ns()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            out.append((time.perf_counter_ns() - t0) / 1000)
            os.waitpid(pid, 0)
        return statistics.median(out)

    unused = calls(False)
    zstream_mp.bind(new_run(url), server=url)
    zstream_mp.publish({"warm": 1})
    zstream_mp.flush(10)
    waiting = calls(False)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        t0 = time.perf_counter_ns()
        for _ in range(1000):
            _forksafe._after_in_child()
        os.write(w, str((time.perf_counter_ns() - t0) / 1000 / 1000).encode())
        os._exit(0)
    os.close(w)
    hook = float(os.read(r, 64))
    os.waitpid(pid, 0)
    return {"unused": unused, "waiting": waiting, "hook": hook}


def _worker(events: int) -> int:
    import zstream_mp

    for start in range(0, events, BURST):
        end = min(events, start + BURST)
        for i in range(start, end):
            zstream_mp.publish({"pid": os.getpid(), "seq": i}, kind="token")
        if end < events:
            zstream_mp.flush(60)  # stay within the 4,096-event queue
    return os.getpid()  # the last burst is delivered by the exit hooks


def _child_pool(url: str, events: int) -> dict[str, float]:
    import multiprocessing

    import zstream_mp

    run_id = new_run(url)
    zstream_mp.bind(run_id, server=url)
    per_worker = events // 4
    pool = multiprocessing.get_context("fork").Pool(4)
    pool.map(abs, range(4))  # workers up
    t0 = time.perf_counter()
    pool.map(_worker, [per_worker] * 4, chunksize=1)
    pool.close()
    pool.join()
    elapsed = time.perf_counter() - t0
    import httpx

    httpx.post(f"{url}/api/v1/zstream/runs/{run_id}/end")
    seen = set()
    for event in zstream_mp.subscribe(url, run_id):
        payload = getattr(event, "payload", {})
        seen.add((payload.get("pid"), payload.get("seq")))
    return {"rate": per_worker * 4 / elapsed, "delivered": len(seen), "expected": per_worker * 4}


def _run_child(*args: str) -> dict[str, float]:
    return run_child(__file__, *args, env={"ZSTREAM_IDLE_EXIT": "600"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--forks", type=int, default=300)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        mode, url, n = args.child
        if mode == "pool":
            result = _child_pool(url, int(n))
        elif mode == "same":
            result = _child_same_process(url, int(n))
        else:
            result = _child_fork_cost(mode, url, int(n))
        print(json.dumps(result))
        return

    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    with server("--max-stream-length", str(args.events * 2)) as url:
        results = {
            mode: _run_child(mode, url, str(args.forks))
            for mode in ("plain", "imported", "active-idle", "active-busy")
        }
        base = results["plain"]
        rows = []
        for mode, label in (
            ("plain", "no zstream-mp"),
            ("imported", "imported, unused"),
            ("active-idle", "active publisher, sender waiting"),
            ("active-busy", "active publisher, sender sending"),
        ):
            r = results[mode]
            rows.append(
                [
                    label,
                    f"{r['call']:.0f}",
                    f"{r['call'] - base['call']:+.0f}",
                    f"{r['trip']:.0f}",
                    f"{r['trip'] - base['trip']:+.0f}",
                    f"{r['first']:.0f}" if mode != "plain" else "-",
                ]
            )
        table(
            f"os.fork() in µs, median of {args.forks} forks",
            [
                "parent process",
                "fork() call",
                "extra",
                "round trip",
                "extra",
                "child's 1st publish",
            ],
            rows,
        )

        same = [_run_child("same", url, str(args.forks)) for _ in range(3)]
        rows = [
            [
                f"run {i + 1}",
                f"{r['unused']:.0f}",
                f"{r['waiting']:.0f}",
                f"{r['waiting'] - r['unused']:+.0f}",
                f"{r['hook']:.1f}",
            ]
            for i, r in enumerate(same)
        ]
        deltas = sorted(r["waiting"] - r["unused"] for r in same)
        rows.append(
            [
                "median",
                "",
                "",
                f"{deltas[1]:+.0f}",
                f"{statistics.median(r['hook'] for r in same):.1f}",
            ]
        )
        table(
            "Same process, zstream-mp imported: unused, then an active publisher (µs)",
            ["", "fork() unused", "fork() active", "extra", "after-fork hook"],
            rows,
        )

        pool = _run_child("pool", url, str(args.events))
        ceiling = ingest_ceiling(url, 64, args.events)
        table(
            f"Pool(4) to our server (memory broker), {args.events:,} events, batch 64",
            ["what", "events/s", "of ceiling", "delivered"],
            [
                [
                    "Pool(4), exit hooks deliver the tail",
                    f"{pool['rate']:,.0f}",
                    f"{pool['rate'] / ceiling:.0%}",
                    f"{int(pool['delivered']):,}/{int(pool['expected']):,}",
                ],
                ["server ingest ceiling (1 client)", f"{ceiling:,.0f}", "100%", "-"],
            ],
        )


if __name__ == "__main__":
    main()
