"""`LogHandler`: `logging` records from the parent and its pool workers become events.

    python examples/log_handler.py

The handler is attached in each worker by the pool's initializer, so this works with every
start method (a forked child would inherit it anyway; spawn and forkserver children would
not).
"""

from __future__ import annotations

import logging
import multiprocessing
import os

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run

log = logging.getLogger("example")


def setup_logging() -> None:
    log.setLevel(logging.INFO)
    if not any(isinstance(h, zstream_mp.LogHandler) for h in log.handlers):
        log.addHandler(zstream_mp.LogHandler())


def work(n: int) -> int:
    log.info("worker %d handles item %d", os.getpid(), n)
    if n == 3:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("item %d failed", n)  # the event carries the traceback
    return n


def main() -> None:
    setup_logging()
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        log.info("fanning out")
        with multiprocessing.Pool(2, initializer=setup_logging) as pool:
            pool.map(work, range(8))
        log.info("done")
        zstream_mp.flush_tree(30)
        end_run(url, run_id, token=token)
        print("published 11 log events")


if __name__ == "__main__":
    main()
