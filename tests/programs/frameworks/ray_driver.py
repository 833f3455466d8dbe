"""A Ray driver in its own process: publishes from tasks and actors, prints a JSON summary.

Usage: `python ray_driver.py CONFIG_JSON`. CONFIG holds `server` and one run id per
case (`tasks`, `actors`, `exit`, `kill`); `address` joins a running cluster
instead of starting a local one. Every event's payload is `{"case", "worker", "seq"}`.
The last stdout line is `RESULT <json>`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import psutil
import ray

import zstream_mp
from zstream_mp.integrations import ray as zray

CFG: dict[str, Any] = json.loads(sys.argv[1])
WORKERS = int(CFG.get("workers", 4))
EVENTS = int(CFG.get("events", 500))


def ctx(case: str) -> zstream_mp.StreamContext:
    return zstream_mp.StreamContext(
        run_id=CFG["runs"][case], server=CFG["server"], token=CFG.get("token")
    )


def publish_all(case: str, worker: int) -> int:
    for seq in range(EVENTS):
        zstream_mp.publish({"case": case, "worker": worker, "seq": seq}, kind="work", index=seq)
    return os.getpid()


@ray.remote
def task(case: str, worker: int) -> int:
    return publish_all(case, worker)


@ray.remote
class Publisher:
    def publish(self, case: str, worker: int) -> int:
        return publish_all(case, worker)

    def publish_then_exit(self, case: str, worker: int) -> None:
        publish_all(case, worker)
        ray.actor.exit_actor()

    def pid(self) -> int:
        return os.getpid()

    def environ(self) -> dict[str, str]:
        return dict(os.environ)


def wait_gone(pids: set[int], timeout: float = 30.0) -> bool:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    return not alive


def user_hook() -> None:
    """A user's own setup hook, composed with the binding one through `base`."""
    os.environ["ZSZ_USER_HOOK"] = "ran"


@ray.remote
def probe() -> dict[str, Any]:
    found = zstream_mp.current_context()
    return {
        "user_hook": os.environ.get("ZSZ_USER_HOOK"),
        "run_id": found.run_id if found else None,
        "ppid_chain": [p.pid for p in psutil.Process().parents()],
    }


def main() -> None:
    out: dict[str, Any] = {"pid": os.getpid()}
    t0 = time.monotonic()
    job_env = zray.runtime_env(ctx("tasks"), base={"worker_process_setup_hook": user_hook})
    init: dict[str, Any] = {"log_to_driver": False, "runtime_env": job_env}
    if CFG.get("address"):
        ray.init(address=CFG["address"], **init)
    else:
        # address="local": a new cluster, whatever RAY_ADDRESS or /tmp/ray may point at
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **init,
        )
    out["init_s"] = round(time.monotonic() - t0, 2)

    seen = ray.get(probe.remote())
    out["user_hook"] = seen["user_hook"]
    out["probe_run_id"] = seen["run_id"]
    out["worker_is_descendant"] = os.getpid() in seen["ppid_chain"]

    # tasks: the job-level runtime_env; the tail is still queued when ray.get returns
    out["task_pids"] = sorted(set(ray.get([task.remote("tasks", w) for w in range(WORKERS)])))

    # actors left alive until shutdown
    env = zray.runtime_env(ctx("actors"))
    actors = [Publisher.options(runtime_env=env).remote() for _ in range(WORKERS)]
    out["actor_pids"] = sorted(
        ray.get([a.publish.remote("actors", w) for w, a in enumerate(actors)])
    )
    # a flush mid-run delivers without ending anyone: the actors answer from the same PIDs
    out["mid_run_flush"] = zray.flush_workers(10.0)
    out["actor_pids_after_flush"] = sorted(ray.get([a.pid.remote() for a in actors]))
    if CFG.get("token"):
        environ = ray.get(actors[0].environ.remote())
        out["token_in_worker_env"] = any(CFG["token"] in v for v in environ.values())
        out["token_in_job_runtime_env"] = CFG["token"] in json.dumps(
            ray.get_runtime_context().runtime_env, default=str
        )

    if "exit" in CFG["runs"]:
        # graceful actor exits, dead before shutdown: __ray_terminate__ and exit_actor()
        env = zray.runtime_env(ctx("exit"))
        ending = [Publisher.options(runtime_env=env).remote() for _ in range(WORKERS)]
        half = WORKERS // 2
        pids = set(ray.get([a.publish.remote("exit", w) for w, a in enumerate(ending[:half])]))
        for a in ending[:half]:
            a.__ray_terminate__.remote()
        pids |= set(ray.get([a.pid.remote() for a in ending[half:]]))
        for w, a in enumerate(ending[half:], start=half):
            a.publish_then_exit.remote("exit", w)
        out["exit_pids"] = sorted(pids)
        out["exit_gone_before_shutdown"] = wait_gone(pids)

    if "kill" in CFG["runs"]:
        env = zray.runtime_env(ctx("kill"), base={"env_vars": {"ZSTREAM_DURABLE": "1"}})
        doomed = [Publisher.options(runtime_env=env).remote() for _ in range(WORKERS)]
        refs = [a.publish.remote("kill", w) for w, a in enumerate(doomed)]
        ray.get(refs)
        for a in doomed:
            ray.kill(a)

    t1 = time.monotonic()
    out["flushed"] = zray.shutdown(timeout=float(CFG.get("flush_timeout", 10.0)))
    out["shutdown_s"] = round(time.monotonic() - t1, 2)
    out["stats"] = zstream_mp.stats().published
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
