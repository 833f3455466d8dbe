"""Dask: a `WorkerPlugin` binds the run in every worker, present and future.

pip install 'zstream-mp[dask]'
python examples/dask_cluster.py
"""

from __future__ import annotations

import os
import sys

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run


def work(n: int) -> int:
    zstream_mp.publish({"n": n, "pid": os.getpid()}, kind="task", index=n)
    return n


def main() -> None:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("this example needs Dask: pip install 'zstream-mp[dask]'")
        sys.exit(0)
    from zstream_mp.integrations import dask as zdask

    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        with (
            LocalCluster(n_workers=2, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            zdask.register(client)  # binds the current run in every worker
            client.gather(client.map(work, range(30)))
            zdask.flush_workers(client, timeout=30)  # deliver now; workers stay up
        end_run(url, run_id, token=token)
        print("published 30 events")


if __name__ == "__main__":
    main()
