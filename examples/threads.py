"""Threads: every thread of a bound process publishes into its run, no setup per thread.

python examples/threads.py
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run


def fetch(page: int) -> int:
    zstream_mp.publish(
        {"page": page, "thread": threading.current_thread().name},
        kind="fetched",
        correlation_id=f"page-{page}",
    )
    return page


def main() -> None:
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(fetch, range(50)))
        zstream_mp.flush(10)  # threads share this process's queue: flush() is enough
        end_run(url, run_id, token=token)
        print("published 50 events")


if __name__ == "__main__":
    main()
