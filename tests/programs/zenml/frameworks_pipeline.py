"""A ZenML step that fans out to Dask and to Ray without publishing anything itself.

Runs inside the ZenML peer venv (`python frameworks_pipeline.py frameworks OUT_DIR`).
The step starts a `LocalCluster` and registers `zstream_mp.integrations.dask`'s plugin,
then starts a local Ray with `zstream_mp.integrations.ray.runtime_env()`; both take the
step's context (ZenML's run, step and credentials), never a `bind()`. Each framework's
4 workers publish 500 events with payload `{"case", "worker", "seq"}`; the step
delivers them with `zdask.flush_workers` before closing the cluster, and with
`zray.shutdown()`. The step writes what it did to `OUT_DIR/<step name>.json`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from zenml import pipeline, step
from zenml.client import Client
from zenml.steps import get_step_context

OUT = Path(sys.argv[2] if len(sys.argv) > 2 else ".")
WORKERS = int(os.environ.get("ZSZ_WORKERS", "4"))
EVENTS = int(os.environ.get("ZSZ_EVENTS", "500"))


@step(enable_cache=False)
def fan_out_frameworks() -> int:
    import ray
    from distributed import Client as DaskClient
    from distributed import LocalCluster

    import zstream_mp
    from zstream_mp.integrations import dask as zdask
    from zstream_mp.integrations import ray as zray

    ctx = get_step_context()
    record: dict[str, Any] = {
        "run_id": str(ctx.pipeline_run.id),
        "step_run_id": str(ctx.step_run.id),
        "step_name": ctx.step_name,
    }

    def publish_all(case: str, worker: int, events: int) -> int:
        """Nested, so it is pickled by value: workers never import this script (or ZenML)."""
        import os

        import zstream_mp

        for seq in range(events):
            zstream_mp.publish({"case": case, "worker": worker, "seq": seq}, kind="work", index=seq)
        return os.getpid()

    t0 = time.monotonic()
    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        DaskClient(cluster) as client,
    ):
        zdask.register(client)
        futures = client.map(publish_all, ["dask"] * WORKERS, range(WORKERS), [EVENTS] * WORKERS)
        record["dask_pids"] = sorted(set(client.gather(futures)))
        # ZenML's server ingests a few thousand events/s: a backlog can outlast the Nanny's
        # 4 s before SIGKILL at close, so deliver it while the workers are still up.
        record["dask_flushed"] = zdask.flush_workers(client, timeout=60.0)
    record["dask_s"] = round(time.monotonic() - t0, 2)

    t0 = time.monotonic()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env=zray.runtime_env(),
    )
    task = ray.remote(publish_all)
    record["ray_pids"] = sorted(
        set(ray.get([task.remote("ray", w, EVENTS) for w in range(WORKERS)]))
    )
    record["ray_flushed"] = zray.shutdown()
    record["ray_s"] = round(time.monotonic() - t0, 2)
    record["step_published"] = zstream_mp.stats().published
    tmp = OUT / "fan_out_frameworks.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, OUT / "fan_out_frameworks.json")
    return WORKERS


@pipeline(enable_cache=False)
def frameworks_pipeline() -> None:
    fan_out_frameworks()


if __name__ == "__main__":
    if not os.path.isdir(".zen"):
        Client.initialize(root=Path.cwd())
    OUT.mkdir(parents=True, exist_ok=True)
    frameworks_pipeline()
    print("zsz pipeline frameworks done", flush=True)
