"""Fork storm: many forks while 4 threads publish at full rate in the parent.

    python storm.py --server URL --run RUN [--token T] [--forks 2000] [--concurrency 8]
                    [--child-deadline 10]

Every child arms a watchdog (SIGALRM, default action: die) right after the fork, publishes
one event tagged (worker='child', seq=i) and exits: even children through the normal
interpreter exit (the library's exit hooks deliver), odd ones through `flush()` then
`os._exit`. The parent reaps every child and records how it ended and how long it lived.
The last stdout line is a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from zstream_mp import bind, flush, publish, stats


def child(i: int, deadline: int) -> None:
    signal.alarm(deadline)
    try:
        publish({"worker": "child", "seq": i, "pid": os.getpid()})
        if i % 2:
            os._exit(0 if flush(timeout=deadline) else 7)
    except BaseException:
        os._exit(9)
    sys.exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--token", default=None)
    parser.add_argument("--forks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--child-deadline", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    bind(args.run, server=args.server, token=args.token)
    # The forking thread competes with 4 publishing threads and the sender for the GIL; a
    # short switch interval lets it fork at a steady pace without slowing the publishers.
    sys.setswitchinterval(0.0005)
    stop = threading.Event()
    counts = [0] * args.threads

    def pump(t: int) -> None:
        seq = 0
        while not stop.is_set():
            publish({"worker": f"t{t}", "seq": seq})
            seq += 1
        counts[t] = seq

    threads = [threading.Thread(target=pump, args=(t,)) for t in range(args.threads)]
    for t in threads:
        t.start()
    time.sleep(0.2)

    live: dict[int, tuple[int, float]] = {}
    failures: list[dict[str, object]] = []
    lifetimes: list[float] = []

    def reap() -> None:
        pid, status = os.waitpid(-1, 0)
        i, started = live.pop(pid)
        lifetimes.append(time.monotonic() - started)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            failures.append({"child": i, "pid": pid, "exit": code})

    start = time.monotonic()
    for i in range(args.forks):
        while len(live) >= args.concurrency:
            reap()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(i, args.child_deadline)
        live[pid] = (i, started)
    while live:
        reap()
    fork_phase = time.monotonic() - start
    stop.set()
    for t in threads:
        t.join()
    delivered = flush(timeout=60)
    st = stats()
    lifetimes.sort()
    print(
        json.dumps(
            {
                "forks": args.forks,
                "failures": failures,
                "fork_phase": fork_phase,
                "lifetime_max": lifetimes[-1],
                "lifetime_p50": lifetimes[len(lifetimes) // 2],
                "lifetime_p99": lifetimes[int(len(lifetimes) * 0.99)],
                "thread_published": counts,
                "flushed": delivered,
                "stats": {
                    "published": st.published,
                    "sent": st.sent,
                    "queued": st.queued,
                    "dropped": dict(st.dropped),
                    "batches": st.batches,
                },
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
