"""A Dask client in its own process: `map` and `submit` publish, then everything closes.

Usage: `python dask_driver.py CONFIG_JSON`. CONFIG holds `server`, `token`, `run`
and `scheduler`: `"local"` starts a `LocalCluster` (processes) *before* the run is
known, an address joins a scheduler started by the `dask scheduler` CLI. The plugin is
registered without any `bind()` in this process. Payloads are `{"case", "worker",
"seq"}`; the last stdout line is `RESULT <json>`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.request
from typing import Any

from distributed import Client, LocalCluster

import zstream_mp
from zstream_mp.integrations import dask as zdask

CFG: dict[str, Any] = json.loads(sys.argv[1])
WORKERS = int(CFG.get("workers", 4))
EVENTS = int(CFG.get("events", 500))


def work(case: str, worker: int) -> int:
    for seq in range(EVENTS):
        zstream_mp.publish({"case": case, "worker": worker, "seq": seq}, kind="work", index=seq)
    return os.getpid()


def main() -> None:
    out: dict[str, Any] = {"pid": os.getpid()}
    t0 = time.monotonic()
    cluster = None
    if CFG["scheduler"] == "local":
        cluster = LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        client = Client(CFG["scheduler"], timeout=60)
        client.wait_for_workers(2, timeout=60)
    out["start_s"] = round(time.monotonic() - t0, 2)
    ctx = zstream_mp.StreamContext(run_id=CFG["run"], server=CFG["server"], token=CFG["token"])
    zdask.register(client, ctx)
    mapped = client.map(work, ["map"] * WORKERS, range(WORKERS), pure=False)
    submitted = [client.submit(work, "submit", w, pure=False) for w in range(WORKERS)]
    out["pids"] = sorted(set(client.gather(mapped) + client.gather(submitted)))
    out["driver_context"] = zstream_mp.current_context() is not None
    if CFG.get("state_url"):  # how much had arrived when the close began
        with urllib.request.urlopen(CFG["state_url"], timeout=10) as resp:
            out["accepted_before_close"] = json.loads(resp.read())["accepted"]
    if cluster is not None and CFG.get("late", True):  # a worker that joins later is bound too
        before = set(client.scheduler_info()["workers"])
        cluster.scale(3)
        client.wait_for_workers(3, timeout=60)
        (late,) = set(client.scheduler_info()["workers"]) - before
        out["late_pid"] = client.submit(work, "late", 0, workers=[late], pure=False).result()
    t1 = time.monotonic()
    client.close()
    if cluster is not None:
        cluster.close()
    out["close_s"] = round(time.monotonic() - t1, 2)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
