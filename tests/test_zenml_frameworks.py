"""Inside a real ZenML step: Dask and Ray workers publish to the step's run on ZenML's server.

The step (`programs/zenml/frameworks_pipeline.py`) never publishes itself before it fans
out, so nothing has been handed down through the environment: the Dask plugin and the Ray
setup hook take ZenML's step context (run, step, server and token) when they are created.
4 Dask workers and 4 Ray tasks publish 500 events each; the run's SSE stream on the ZenML
server must hold exactly those 4,000 events, attributed to the step. ZenML's server is
slow enough that the step flushes the Dask workers before closing the cluster
(`zdask.flush_workers`): left to the close path alone, 1,037 of 2,000 arrived here,
the Nanny SIGKILLing workers 4 s into their exit flush.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from helpers.frameworks import driver_env
from helpers.programs import REPO, program
from helpers.zenml_peer import Peer, PeerUnavailable, ensure_peer
from helpers.zenml_steps import (
    ZStreamNotInstallable,
    ensure_peer_packages,
    ensure_zstream_in_peer,
    events_by,
    read_stream,
    run_pipeline,
)

pytestmark = [pytest.mark.zenml, pytest.mark.ray, pytest.mark.dask, pytest.mark.timeout(900)]

WORKERS, EVENTS = 4, 500
SCRIPT = program("zenml/frameworks_pipeline.py")


@pytest.fixture(scope="module")
def peer() -> Peer:
    try:
        found = ensure_peer()
    except PeerUnavailable as exc:
        pytest.skip(f"ZenML peer unavailable, ZenML + Ray/Dask test NOT run: {exc}")
    try:
        ensure_zstream_in_peer(found.python)
    except ZStreamNotInstallable as exc:
        pytest.skip(f"zstream_mp not installable in the ZenML peer venv, NOT run: {exc}")
    try:  # they only add packages to the venv (checked with pip --dry-run: nothing upgraded)
        ensure_peer_packages(found.python, "ray", "distributed")
    except ZStreamNotInstallable as exc:
        pytest.skip(f"Ray/distributed not installable in the ZenML peer venv, NOT run: {exc}")
    return found


def test_step_fans_out_to_dask_and_ray_without_publishing_first(peer: Peer, tmp_path: Path) -> None:
    frameworks_env = {
        k: v for k, v in driver_env().items() if k.startswith("RAY_") or k == "PYTHONPATH"
    }
    frameworks_env["PYTHONPATH"] = str(REPO)
    result = run_pipeline(peer, "frameworks", tmp_path, env=frameworks_env, script=SCRIPT)
    result.check()
    rec = result.steps["fan_out_frameworks"]
    print(f"\nZenML step: Dask {rec['dask_s']} s, Ray {rec['ray_s']} s")
    assert rec["step_published"] == 0, "the step itself published"
    frames = read_stream(peer.url, rec["run_id"], peer.token)
    ids = (rec["run_id"], rec["step_run_id"], rec["step_name"])
    groups = events_by(frames, "case")
    assert set(groups) == {"dask", "ray"}, set(groups)
    want = collections.Counter((w, s) for w in range(WORKERS) for s in range(EVENTS))
    problems = []
    for case, mine in sorted(groups.items()):
        got = collections.Counter(
            (f.json()["payload"]["worker"], f.json()["payload"]["seq"]) for f in mine
        )
        if got != want:
            problems.append(
                f"{case}: {sum(got.values())} events; missing {sum((want - got).values())}, "
                f"extra {sum((got - want).values())}"
            )
        where = {
            (e["pipeline_run_id"], e["step_run_id"], e["step_name"])
            for e in (f.json() for f in mine)
        }
        if where != {ids}:
            problems.append(f"{case}: events attributed to {where - {ids}}")
    assert not problems, problems
    assert rec["dask_flushed"] and rec["ray_flushed"]
