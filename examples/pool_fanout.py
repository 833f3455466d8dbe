"""Fan work out over `multiprocessing.Pool` with every start method this platform has.

    python examples/pool_fanout.py          # ZSTREAM_SERVER / ZSTREAM_TOKEN, else embedded

Workers never call `flush()`: their exit hooks deliver what is left, also when the pool
terminates them. `flush_tree()` waits until every worker's events are on the server.
"""

from __future__ import annotations

import multiprocessing
import os

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run

EVENTS = 200


def work(worker: int) -> int:
    for i in range(EVENTS):
        zstream_mp.publish(
            {"worker": worker, "pid": os.getpid(), "done": i + 1, "total": EVENTS},
            kind="progress",
            correlation_id=f"worker-{worker}",
            index=i,
        )
    return worker


def main() -> None:
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        zstream_mp.publish({"state": "starting"}, kind="status")
        methods = multiprocessing.get_all_start_methods()  # fork, forkserver, spawn on Linux
        for method in methods:
            with multiprocessing.get_context(method).Pool(4) as pool:  # terminate() on exit
                pool.map(work, range(4))
        zstream_mp.publish({"state": "done", "start_methods": methods}, kind="status")
        zstream_mp.flush_tree(30)
        end_run(url, run_id, token=token)
        print(f"published {2 + EVENTS * 4 * len(methods)} events ({', '.join(methods)})")


if __name__ == "__main__":
    main()
