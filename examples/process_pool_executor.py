"""`concurrent.futures.ProcessPoolExecutor`: workers publish, the parent waits for them.

python examples/process_pool_executor.py
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run


def square(n: int) -> int:
    zstream_mp.publish({"n": n, "pid": os.getpid()}, kind="task", correlation_id=f"task-{n}")
    return n * n


def main() -> None:
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        with ProcessPoolExecutor(max_workers=4) as pool:
            total = sum(pool.map(square, range(40)))
        zstream_mp.publish({"sum_of_squares": total}, kind="result")
        zstream_mp.flush_tree(30)
        end_run(url, run_id, token=token)
        print(f"sum of squares {total}; published 41 events")


if __name__ == "__main__":
    main()
