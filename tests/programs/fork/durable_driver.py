"""Durable-mode driver, run by each interpreter under test: kill workers, then flush the tree.

    python durable_driver.py CASE --server URL --run RUN [--token T] --tag TAG

CASE `sigkill`: 4 forked workers publish at full rate (at most 4 x `--events` each) and
are SIGKILLed mid-burst;
`os_exit`: 4 forked workers publish 2,000 events each and leave through `os._exit(0)`;
`pool_spill` (default mode, a slow server): a fork `Pool(4)` publishes 2,000 events per
worker, so its workers' exit budget runs out and they spool the rest.
The driver (their parent) then calls `flush_tree()`. Last stdout line, JSON:
`{"returned": {worker: last seq publish() returned for}, "flushed": bool, "stats": ...}`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time

import zstream_mp
from zstream_mp._recovery import registry as _registry


def forever(worker: str, tag: str, progress: object, cap: int) -> None:
    """Publish at full rate until killed; past `cap` events, wait to be killed (a parent
    slow to kill on a loaded machine must not push a run past ZenML's ~10,000 retained
    events, or the count would miss what the server trimmed)."""
    seq = 0
    while seq < cap:
        zstream_mp.publish({"worker": worker, "seq": seq, "tag": tag})
        progress.value = seq  # type: ignore[attr-defined]
        seq += 1
    while True:
        time.sleep(1)


def then_exit(worker: str, tag: str, n: int) -> None:
    for seq in range(n):
        zstream_mp.publish({"worker": worker, "seq": seq, "tag": tag})
    os._exit(0)


def burst(args: tuple[str, str, int]) -> int:
    worker, tag, n = args
    for seq in range(n):
        zstream_mp.publish({"worker": worker, "seq": seq, "tag": tag})
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["sigkill", "os_exit", "pool_spill"])
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
            ctx.Process(target=forever, args=(f"w{i}", args.tag, progress[i], 4 * args.events))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 30

        def far_enough() -> bool:  # every worker mid-burst, about 4 x events in all
            values = [v.value for v in progress]
            return min(values) >= 50 and sum(values) >= 4 * args.events

        while not far_enough() and time.monotonic() < deadline:
            time.sleep(0.005)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        for p in procs:
            p.join()
        returned = {f"w{i}": int(progress[i].value) for i in range(4)}
    elif args.case == "pool_spill":
        pool = ctx.Pool(4)
        pool.map(burst, [(f"w{i}", args.tag, args.events) for i in range(4)], chunksize=1)
        pool.close()
        pool.join()
        returned = {f"w{i}": args.events - 1 for i in range(4)}
    else:
        procs = [
            ctx.Process(target=then_exit, args=(f"w{i}", args.tag, args.events)) for i in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        returned = {f"w{i}": args.events - 1 for i in range(4)}
    started = time.monotonic()
    flushed = zstream_mp.flush_tree(120.0)
    took = time.monotonic() - started
    tree = zstream_mp.stats("tree")
    if not flushed:  # what each process left, for the failure message
        for found in _registry.scan():
            print(f"registry row: {found.row()!r} spool={found.spool!r}", file=sys.stderr)
    print(
        json.dumps(
            {
                "returned": returned,
                "flushed": flushed,
                "spooled": tree.spooled,
                "spool_sent": tree.spool_sent,
                "published": tree.published,
                "flush_tree_s": round(took, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
