"""zstream_mp inside real ZenML steps: same run/step attribution and frames as zenml.streaming.

Real ZenML 0.98.0 server (../shared/peers/zenml), real pipelines on the local orchestrator,
run with the peer venv's Python from a temporary ZenML repository. Each step publishes one
sequence through `zenml.streaming.publish` and the same sequence through
`zstream_mp.publish` (payload field `via` tells them apart); the run's SSE stream is then
replayed up to `end` and both halves are compared frame by frame.

Skipped, with the reason, when the peer cannot be started or zstream_mp cannot be installed
into its venv.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import zenml_peer, zenml_steps
from helpers.servers import start_server
from helpers.zenml_steps import Frame, PipelineResult, events_by, read_stream, run_pipeline

pytestmark = [pytest.mark.timeout(900)]
needs_peer = pytest.mark.zenml

COUNT = 12  # streaming_pipeline.py's default ZSZ_COUNT
POOL_TASKS = 8
CONTROL = {"end", "gap", "cursor", "error", "system"}


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def peer() -> zenml_peer.Peer:
    try:
        found = zenml_peer.ensure_peer()
    except zenml_peer.PeerUnavailable as exc:
        pytest.skip(f"ZenML peer unavailable, zenml step tests NOT run: {exc}")
    try:
        zenml_steps.ensure_zstream_in_peer(found.python)
    except zenml_steps.ZStreamNotInstallable as exc:
        pytest.skip(f"zstream_mp not installable in the ZenML peer venv, NOT run: {exc}")
    return found


def _run(
    peer: zenml_peer.Peer, mode: str, tmp: Path, env: dict[str, str] | None = None
) -> PipelineResult:
    result = run_pipeline(peer, mode, tmp, env=env)
    result.check()
    return result


@pytest.fixture(scope="module")
def compare(
    peer: zenml_peer.Peer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PipelineResult, list[Frame]]:
    result = _run(peer, "compare", tmp_path_factory.mktemp("zenml-compare"))
    return result, read_stream(peer.url, result.run_id, peer.token)


def _seqs(frames: list[Frame]) -> list[int]:
    return [f.json()["payload"]["seq"] for f in frames]


def _of_step(frames: list[Frame], step_name: str | None) -> list[Frame]:
    return [f for f in frames if f.json()["step_name"] == step_name]


def assert_mirrors(
    zenml_frames: list[Frame],
    zstream_frames: list[Frame],
    record: dict[str, Any] | None,
    *,
    count: int = COUNT,
) -> None:
    """One step's zstream half equals its ZenML half: ids, order, exact set, frame bytes."""
    assert _seqs(zenml_frames) == list(range(count)), "ZenML's own half is incomplete"
    assert _seqs(zstream_frames) == list(range(count)), (
        "zstream_mp events lost, duplicated or reordered"
    )
    for zn, zs in zip(zenml_frames, zstream_frames, strict=True):
        got, want = zs.json(), zn.json()
        for key in ("pipeline_run_id", "step_run_id", "step_name"):
            assert got[key] == want[key], key
        if record is not None:
            assert got["pipeline_run_id"] == record["run_id"]
            assert got["step_run_id"] == record.get("step_run_id")
            assert got["step_name"] == record.get("step_name")
        assert zs.event == zn.event
        assert zn.data.count('"via":"zenml"') == 1
        assert zs.data == zn.data.replace('"via":"zenml"', '"via":"zstream"'), (
            f"frame differs beyond the via field:\n{zn.data}\n{zs.data}"
        )


def assert_unique_ids(frames: list[Frame]) -> None:
    ids = [f.id for f in frames if f.event not in CONTROL]
    assert None not in ids and len(ids) == len(set(ids)), "duplicate or missing SSE ids"


# ------------------------------------------------------------------ plain steps


@needs_peer
def test_context_matches_zenml_step(
    compare: tuple[PipelineResult, list[Frame]], peer: zenml_peer.Peer
) -> None:
    result, _frames = compare
    assert set(result.steps) == {"emit", "emit_2"}
    for name, rec in result.steps.items():
        ctx = rec["context"]
        assert (ctx["run_id"], ctx["step_run_id"], ctx["step_name"]) == (
            rec["run_id"],
            rec["step_run_id"],
            name,
        )
        assert ctx["server"] == peer.url and ctx["has_token"]
        assert rec["zenml_flush"] and rec["zstream_flush"]
    # the local orchestrator runs both steps in one process: cumulative, nothing dropped
    stats = result.steps["emit_2"]["stats"]
    assert stats["published"] == stats["sent"] == 2 * COUNT
    assert not any(stats["dropped"].values()) and not stats["muted"]


@needs_peer
def test_events_mirror_zenml_streaming(compare: tuple[PipelineResult, list[Frame]]) -> None:
    result, frames = compare
    assert frames[-1].event == "end"
    groups = events_by(frames)
    assert set(groups) == {"zenml", "zstream"}
    assert len(groups["zstream"]) == len(groups["zenml"]) == 2 * COUNT
    assert_unique_ids(frames)
    for name, rec in result.steps.items():
        assert_mirrors(_of_step(groups["zenml"], name), _of_step(groups["zstream"], name), rec)


@needs_peer
def test_context_resolution_cost(
    compare: tuple[PipelineResult, list[Frame]], record_property: Any
) -> None:
    """Reported, not asserted: per-call cost inside a step (best of 5 x 20,000 calls)."""
    bench = compare[0].steps["emit"]["bench_ns"]
    assert set(bench) == {"zenml_context", "current_context"}
    for name, ns in bench.items():
        record_property(f"{name}_ns", round(ns, 1))
    print(
        "\nper call inside a ZenML step: " + ", ".join(f"{k} {v:.0f} ns" for k, v in bench.items())
    )


# ------------------------------------------------------------------ to our server


@pytest.fixture(scope="module")
def redirected(
    peer: zenml_peer.Peer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PipelineResult, list[Frame], list[Frame], str, str]]:
    """The compare pipeline with ZSTREAM_SERVER/ZSTREAM_TOKEN naming our server."""
    token = "zsz-" + os.urandom(8).hex()
    with start_server(token=token) as server:
        result = _run(
            peer,
            "compare",
            tmp_path_factory.mktemp("zenml-redirect"),
            env={"ZSTREAM_SERVER": server.url, "ZSTREAM_TOKEN": token},
        )
        zenml_frames = read_stream(peer.url, result.run_id, peer.token)
        server.end_run(result.run_id)
        ours = read_stream(server.url, result.run_id, token)
        yield result, zenml_frames, ours, server.url, token


@needs_peer
def test_zstream_server_env_redirects_with_zenml_ids(
    redirected: tuple[PipelineResult, list[Frame], list[Frame], str, str],
) -> None:
    result, zenml_frames, ours, url, token = redirected
    for rec in result.steps.values():
        ctx = rec["context"]
        assert (ctx["run_id"], ctx["step_run_id"]) == (rec["run_id"], rec["step_run_id"])
        assert ctx["server"] == url
        # ZenML's credentials never travel to a server other than ZenML's store
        assert ctx["token_sha"] == _sha(token)
    assert result.steps["emit_2"]["stats"]["sent"] == 2 * COUNT
    on_zenml = events_by(zenml_frames)
    assert set(on_zenml) == {"zenml"}, "zstream_mp events went to ZenML's store URL"
    on_ours = events_by(ours)
    assert set(on_ours) == {"zstream"}
    assert_unique_ids(ours)
    for name, rec in result.steps.items():
        assert_mirrors(_of_step(on_zenml["zenml"], name), _of_step(on_ours["zstream"], name), rec)


@needs_peer
def test_local_sql_store_with_zstream_server(peer: zenml_peer.Peer, tmp_path: Path) -> None:
    """A ZenML client on its local SQL store (no ZenML server): ids from ZenML, events
    to ZSTREAM_SERVER. `zenml.streaming` mutes itself there (the SQL store refuses)."""
    token = "zsz-" + os.urandom(8).hex()
    with start_server(token=token) as server:
        result = run_pipeline(
            peer,
            "compare",
            tmp_path,
            local_store=True,
            env={"ZSTREAM_SERVER": server.url, "ZSTREAM_TOKEN": token},
        )
        result.check()
        server.end_run(result.run_id)
        ours = read_stream(server.url, result.run_id, token)
    for rec in result.steps.values():
        assert rec["context"]["server"] == server.url
        assert rec["context"]["token_sha"] == _sha(token)
        assert rec["context"]["step_run_id"] == rec["step_run_id"]
    groups = events_by(ours)
    assert set(groups) == {"zstream"}
    assert_unique_ids(ours)
    for name, rec in result.steps.items():
        mine = _of_step(groups["zstream"], name)
        assert _seqs(mine) == list(range(COUNT)), name
        for f in mine:
            got = f.json()
            assert (got["pipeline_run_id"], got["step_run_id"]) == (
                rec["run_id"],
                rec["step_run_id"],
            )


# ------------------------------------------------------------------ dynamic pipeline


@needs_peer
def test_dynamic_pipeline_body_and_step(peer: zenml_peer.Peer, tmp_path: Path) -> None:
    result = run_pipeline(peer, "dynamic", tmp_path)
    if result.returncode != 0 and "dynamic" in result.log.lower() and not result.steps:
        pytest.skip(
            f"@pipeline(dynamic=True) did not run on the local orchestrator: {result.log[-500:]}"
        )
    result.check()
    body, step = result.steps["body"], result.steps["dyn_step"]
    assert body["context"]["run_id"] == body["run_id"] == step["run_id"]
    assert body["context"]["step_run_id"] is None and body["context"]["step_name"] is None
    assert step["context"]["step_run_id"] == step["step_run_id"]
    frames = read_stream(peer.url, body["run_id"], peer.token)
    groups = events_by(frames)
    assert_unique_ids(frames)
    for where, rec in (("body", None), ("step", step)):
        zn = [f for f in groups["zenml"] if f.json()["payload"]["where"] == where]
        zs = [f for f in groups["zstream"] if f.json()["payload"]["where"] == where]
        if where == "step":
            # one event each, no seq field: compare ids and bytes directly
            assert len(zn) == len(zs) == 1
            assert zs[0].data == zn[0].data.replace('"via":"zenml"', '"via":"zstream"')
            assert zs[0].json()["step_run_id"] == rec["step_run_id"]
            assert zs[0].json()["step_name"] == "dyn_step"
        else:
            assert_mirrors(zn, zs, {"run_id": body["run_id"]}, count=2)


# ------------------------------------------------------------------ multiprocessing


@needs_peer
def test_pool_workers_inherit_step_context(peer: zenml_peer.Peer, tmp_path: Path) -> None:
    result = _run(peer, "pool", tmp_path)
    rec = result.steps["fan_out"]
    ids = (rec["run_id"], rec["step_run_id"], rec["step_name"])
    for method, workers in rec["workers"].items():
        assert len(workers) == POOL_TASKS
        for w in workers:
            ctx = w["context"]
            assert ctx is not None, f"{method} worker had no context"
            assert (ctx["run_id"], ctx["step_run_id"], ctx["step_name"]) == ids, method
            assert w["flush"], f"{method} worker flush timed out"
    frames = read_stream(peer.url, rec["run_id"], peer.token)
    assert_unique_ids(frames)
    groups = events_by(frames)
    assert sorted(_seqs(groups["step"])) == [0, 1]
    pool = groups["pool"]
    for f in pool + groups["step"]:
        got = f.json()
        assert (got["pipeline_run_id"], got["step_run_id"], got["step_name"]) == ids
    for method in ("spawn", "fork"):
        got = sorted(
            f.json()["payload"]["seq"] for f in pool if f.json()["payload"]["method"] == method
        )
        assert got == list(range(POOL_TASKS)), f"{method}: {got}"
    assert len(pool) == 2 * POOL_TASKS


@needs_peer
def test_forkserver_workers_follow_the_current_step(peer: zenml_peer.Peer, tmp_path: Path) -> None:
    """Two steps in one process, a forkserver Pool in each.

    The forkserver process is started during the first step and reused by the second,
    so an environment snapshot taken when it started must not decide attribution.
    """
    result = _run(peer, "forkserver", tmp_path)
    assert set(result.steps) == {"via_forkserver", "via_forkserver_2"}
    frames = read_stream(peer.url, result.run_id, peer.token)
    assert_unique_ids(frames)
    pool = events_by(frames).get("pool", [])
    for name, rec in result.steps.items():
        tag = "a" if name == "via_forkserver" else "b"
        ids = (rec["run_id"], rec["step_run_id"], name)
        seen = {(w["context"] or {}).get("step_run_id") for w in rec["workers"]["forkserver"]}
        assert seen == {rec["step_run_id"]}, f"{name}: workers resolved step runs {seen}"
        mine = [f.json() for f in pool if f.json()["payload"]["method"] == f"forkserver-{tag}"]
        assert sorted(e["payload"]["seq"] for e in mine) == list(range(POOL_TASKS)), name
        wrong = [
            e["step_name"]
            for e in mine
            if (e["pipeline_run_id"], e["step_run_id"], e["step_name"]) != ids
        ]
        assert not wrong, f"{name}: {len(wrong)} worker events attributed to {set(wrong)}"


# ------------------------------------------------------------------ 401


@needs_peer
def test_401_reauthenticates_through_zenml_store(peer: zenml_peer.Peer, tmp_path: Path) -> None:
    result = _run(peer, "reauth", tmp_path)
    rec = result.steps["reauth"]
    assert rec["poisoned"]["context"]["token_sha"] == rec["bad_token_sha"]
    assert rec["zstream_flush"]
    assert rec["stats"]["sent"] == COUNT and not any(rec["stats"]["dropped"].values())
    assert rec["cached_token_sha"] not in (None, rec["bad_token_sha"])
    assert rec["cached_token_sha"] == rec["store_token_sha"], "ZenML and zstream_mp disagree"
    assert rec["after"]["context"]["token_sha"] == rec["cached_token_sha"]
    assert rec["zenml_client_ok"], "ZenML's own client broke after the forced login"
    frames = read_stream(peer.url, rec["run_id"], peer.token)
    events = [f for f in frames if f.event not in CONTROL]
    assert [f.json()["payload"]["seq"] for f in events] == list(range(COUNT))
    assert all(f.json()["step_run_id"] == rec["step_run_id"] for f in events)


# ------------------------------------------------------------------ without ZenML


def test_no_zenml_import_and_no_context_without_a_step(tmp_path: Path) -> None:
    """zstream_mp never imports ZenML; a half-present `zenml` yields no context, no error."""
    code = (
        "import sys, types, zstream_mp\n"
        "from zstream_mp import _zenml\n"
        "assert 'zenml' not in sys.modules\n"
        "assert zstream_mp.current_context() is None\n"
        "sys.modules['zenml'] = types.ModuleType('zenml')\n"
        "assert _zenml.zenml_context() is None\n"
        "assert _zenml.refresh_token('http://127.0.0.1:1') is None\n"
        "assert zstream_mp.current_context() is None\n"
        "zstream_mp.publish({'x': 1})\n"
        "assert zstream_mp.stats().dropped['no_context'] == 1, zstream_mp.stats()\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSTREAM_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
