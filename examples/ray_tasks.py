"""Ray: bind the run in every worker of the job, deliver their tail before shutdown.

    pip install 'zstream-mp[ray]'
    python examples/ray_tasks.py

Ray's workers are started by the raylet, not by this process, so `runtime_env()` binds
the run in each of them. `zray.shutdown()` flushes every worker, then `ray.shutdown()`.
"""

from __future__ import annotations

import os
import sys

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run


def main() -> None:
    try:
        import ray
    except ImportError:
        print("this example needs Ray: pip install 'zstream-mp[ray]'")
        sys.exit(0)
    from zstream_mp.integrations import ray as zray

    @ray.remote
    def work(worker: int) -> int:
        for i in range(50):
            zstream_mp.publish({"worker": worker, "seq": i}, kind="work", index=i)
        return os.getpid()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster on loopback
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        ray.init(
            address="local",  # a cluster of its own, on loopback
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            runtime_env=zray.runtime_env(),  # every task and actor of this job is bound
        )
        pids = set(ray.get([work.remote(w) for w in range(4)]))
        zray.shutdown(30)  # every worker flushes, then ray.shutdown()
        end_run(url, run_id, token=token)
        print(f"published 200 events from {len(pids)} Ray workers")


if __name__ == "__main__":
    main()
