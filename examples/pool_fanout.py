"""Fan a step out over a process pool; every worker's events reach the server exactly once.

    zstream-mp serve &                      # or any ZenML 0.98 server with streaming on
    python examples/pool_fanout.py http://127.0.0.1:8237

Workers never call flush(): their exit hooks deliver what is left, even when the pool
terminates them. The script then reads the run back over SSE and counts.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter

import zstream_mp
from zstream_mp.runs import create_run, end_run


def work(worker: int) -> int:
    for i in range(200):
        zstream_mp.publish(
            {"worker": worker, "seq": i, "pid": os.getpid()},
            kind="progress",
            correlation_id=f"worker-{worker}",
            index=i,
        )
    return worker


def main(server: str) -> None:
    run_id = create_run(server)
    zstream_mp.bind(run_id, server=server)
    zstream_mp.publish({"state": "starting"}, kind="status")
    for method in ("fork", "forkserver", "spawn"):
        with multiprocessing.get_context(method).Pool(4) as pool:  # terminate() on exit
            pool.map(work, range(4))
    zstream_mp.publish({"state": "done"}, kind="status")
    zstream_mp.flush()
    end_run(server, run_id)

    seen = Counter(
        event.kind
        for event in zstream_mp.subscribe(server, run_id)
        if isinstance(event, zstream_mp.Event)
    )
    print(dict(seen))  # {'status': 2, 'progress': 2400}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8237")
