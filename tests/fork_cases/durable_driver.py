"""Durable-mode driver, run by each interpreter under test: kill workers, then flush the tree.

    python durable_driver.py CASE --server URL --run RUN [--token T] --tag TAG

CASE ``sigkill``: 4 forked workers publish at full rate and are SIGKILLed mid-burst;
``os_exit``: 4 forked workers publish 2,000 events each and leave through ``os._exit(0)``.
The driver (their parent) then calls ``flush_tree()``. Last stdout line, JSON:
``{"returned": {worker: last seq publish() returned for}, "flushed": bool, "stats": ...}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import time

import zstream_mp


def forever(worker: str, tag: str, progress: object) -> None:
    seq = 0
    while True:
        zstream_mp.publish({"worker": worker, "seq": seq, "tag": tag})
        progress.value = seq  # type: ignore[attr-defined]
        seq += 1


def then_exit(worker: str, tag: str, n: int) -> None:
    for seq in range(n):
        zstream_mp.publish({"worker": worker, "seq": seq, "tag": tag})
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["sigkill", "os_exit"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--token")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    zstream_mp.bind(args.run, server=args.server, token=args.token)
    ctx = multiprocessing.get_context("fork")
    returned: dict[str, int] = {}
    if args.case == "sigkill":
        progress = [ctx.Value("q", -1, lock=False) for _ in range(4)]
        procs = [
            ctx.Process(target=forever, args=(f"w{i}", args.tag, progress[i])) for i in range(4)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 30
        while min(v.value for v in progress) < args.events and time.monotonic() < deadline:
            time.sleep(0.005)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        for p in procs:
            p.join()
        returned = {f"w{i}": int(progress[i].value) for i in range(4)}
    else:
        procs = [
            ctx.Process(target=then_exit, args=(f"w{i}", args.tag, args.events)) for i in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        returned = {f"w{i}": args.events - 1 for i in range(4)}
    flushed = zstream_mp.flush_tree(120.0)
    tree = zstream_mp.stats("tree")
    print(
        json.dumps(
            {
                "returned": returned,
                "flushed": flushed,
                "spooled": tree.spooled,
                "spool_sent": tree.spool_sent,
                "published": tree.published,
            }
        )
    )


if __name__ == "__main__":
    main()
