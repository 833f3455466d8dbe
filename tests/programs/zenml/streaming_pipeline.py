"""ZenML pipelines whose steps publish through zenml.streaming and zstream_mp side by side.

Runs inside the ZenML peer venv, on the local orchestrator, from a temporary ZenML
repository. Usage: `python streaming_pipeline.py MODE OUT_DIR`. Each step writes what
it saw (ZenML's own ids, zstream_mp's resolved context, publisher stats) to
`OUT_DIR/<step name>.json` for the test to compare with what the server received.

Modes:
  compare  two invocations of one step, each publishing the same sequence through
           `zenml.streaming.publish` and `zstream_mp.publish` (payload `via` differs)
  pool     one step whose spawn and fork Pool workers publish through zstream_mp
  forkserver  two steps, each with a forkserver Pool (the server process is started
           during the first step and reused by the second)
  dynamic  a `@pipeline(dynamic=True)` whose body and step both publish
  reauth   one step whose ZenML store token is replaced by a rejected one: the 401 must
           re-authenticate through ZenML's store once and deliver everything
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

from zenml import pipeline, step
from zenml import streaming as zenml_streaming
from zenml.client import Client
from zenml.steps import get_step_context

import zstream_mp

MODE = sys.argv[1] if len(sys.argv) > 1 else "compare"
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("ZSZ_OUT", "."))
COUNT = int(os.environ.get("ZSZ_COUNT", "12"))
POOL_TASKS = int(os.environ.get("ZSZ_POOL_TASKS", "8"))


def sequence(tag: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The (payload, publish kwargs) list each publisher sends; awkward values on purpose."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(COUNT):
        payload: dict[str, Any] = {
            "seq": i,
            "tag": tag,
            "text": 'héllo ✓ "q" \\ \n\t \u2028 😀',
            "num": [0.1, 1e100, -0.0, 2**53 + 1, -7, 1.5e-7],
            "nested": {"a": [1, 2, None], "b": {"c": True, "d": False}, "e": {}},
        }
        kwargs: dict[str, Any] = {}
        if i % 3 == 0:
            kwargs = {"kind": "token", "correlation_id": f"chat-{tag}", "index": i}
        elif i % 3 == 1:
            kwargs = {"kind": "progress", "correlation_id": "job-B"}
        out.append((payload, kwargs))
    return out


def _identity() -> dict[str, Any]:
    ctx = get_step_context()
    return {
        "run_id": str(ctx.pipeline_run.id),
        "step_run_id": str(ctx.step_run.id),
        "step_name": ctx.step_name,
    }


def _zstream_view() -> dict[str, Any]:
    ctx = zstream_mp.current_context()
    if ctx is None:
        return {"context": None}
    return {
        "context": {
            "run_id": ctx.run_id,
            "step_run_id": ctx.step_run_id,
            "step_name": ctx.step_name,
            "server": ctx.server,
            "has_token": bool(ctx.token),
            "token_sha": _sha(ctx.token),
        }
    }


def _stats() -> dict[str, Any]:
    s = zstream_mp.stats()
    return {"published": s.published, "sent": s.sent, "dropped": dict(s.dropped), "muted": s.muted}


def _write(name: str, data: dict[str, Any]) -> None:
    tmp = OUT / f"{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, OUT / f"{name}.json")


def _bench(calls: int = 20000) -> dict[str, float]:
    """Per-call cost (ns) of resolving the context inside a step."""
    from zstream_mp import _zenml

    out: dict[str, float] = {}
    for name, fn in (
        ("zenml_context", _zenml.zenml_context),
        ("current_context", zstream_mp.current_context),
    ):
        fn()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter_ns() - t0) / calls)
        out[name] = best
    return out


@step(enable_cache=False)
def emit(tag: str) -> int:
    """Publish the same sequence through both publishers, interleaved, then flush both."""
    seen = _identity()
    bench = _bench() if tag == "first" else {}
    for payload, kwargs in sequence(tag):
        zenml_streaming.publish({**payload, "via": "zenml"}, **kwargs)
        zstream_mp.publish({**payload, "via": "zstream"}, **kwargs)
    zenml_ok = zenml_streaming.flush(timeout=30.0)
    zstream_ok = zstream_mp.flush(timeout=30.0)
    _write(
        seen["step_name"],
        {
            **seen,
            **_zstream_view(),
            "zenml_flush": zenml_ok,
            "zstream_flush": zstream_ok,
            "stats": _stats(),
            "bench_ns": bench,
        },
    )
    return COUNT


@pipeline(enable_cache=False)
def compare_pipeline() -> None:
    emit(tag="first")
    emit(tag="second", after="emit")


def pool_task(args: tuple[str, int]) -> tuple[int, bool, dict[str, Any]]:
    """Runs in a Pool worker: no ZenML step context here, only what zstream_mp hands down."""
    method, seq = args
    zstream_mp.publish(
        {"via": "pool", "method": method, "worker": os.getpid(), "seq": seq}, kind="work", index=seq
    )
    ok = zstream_mp.flush(timeout=30.0)
    return os.getpid(), ok, _zstream_view()


@step(enable_cache=False)
def fan_out() -> int:
    """A step that publishes itself, then fans work out to spawn and fork pools."""
    seen = _identity()
    zstream_mp.publish({"via": "step", "seq": 0})
    results: dict[str, Any] = {}
    for method in ("spawn", "fork"):
        mp = multiprocessing.get_context(method)
        with mp.Pool(2) as pool:
            res = pool.map(pool_task, [(method, i) for i in range(POOL_TASKS)])
            pool.close()
            pool.join()
        results[method] = [{"pid": pid, "flush": ok, **view} for pid, ok, view in res]
    zstream_mp.publish({"via": "step", "seq": 1})
    ok = zstream_mp.flush(timeout=30.0)
    _write(
        seen["step_name"],
        {**seen, **_zstream_view(), "zstream_flush": ok, "workers": results, "stats": _stats()},
    )
    return POOL_TASKS


@pipeline(enable_cache=False)
def pool_pipeline() -> None:
    fan_out()


@step(enable_cache=False)
def via_forkserver(tag: str) -> int:
    """A forkserver Pool per step: the forkserver process outlives the first step."""
    seen = _identity()
    zstream_mp.publish({"via": "step", "tag": tag, "seq": 0})
    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        res = pool.map(pool_task, [(f"forkserver-{tag}", i) for i in range(POOL_TASKS)])
        pool.close()
        pool.join()
    ok = zstream_mp.flush(timeout=30.0)
    _write(
        seen["step_name"],
        {
            **seen,
            **_zstream_view(),
            "zstream_flush": ok,
            "workers": {"forkserver": [{"pid": pid, "flush": f, **view} for pid, f, view in res]},
        },
    )
    return POOL_TASKS


@pipeline(enable_cache=False)
def forkserver_pipeline() -> None:
    via_forkserver(tag="a")
    via_forkserver(tag="b", after="via_forkserver")


@step(enable_cache=False)
def dyn_step() -> int:
    seen = _identity()
    zenml_streaming.publish({"via": "zenml", "where": "step"})
    zstream_mp.publish({"via": "zstream", "where": "step"})
    _write(
        "dyn_step",
        {
            **seen,
            **_zstream_view(),
            "zenml_flush": zenml_streaming.flush(30.0),
            "zstream_flush": zstream_mp.flush(30.0),
        },
    )
    return 1


@pipeline(dynamic=True, enable_cache=False)
def dynamic_pipeline() -> None:
    from zenml.execution.pipeline.dynamic.run_context import DynamicPipelineRunContext

    run = DynamicPipelineRunContext.get()
    zenml_streaming.publish({"via": "zenml", "where": "body", "seq": 0})
    zstream_mp.publish({"via": "zstream", "where": "body", "seq": 0})
    dyn_step()
    zenml_streaming.publish({"via": "zenml", "where": "body", "seq": 1})
    zstream_mp.publish({"via": "zstream", "where": "body", "seq": 1})
    _write(
        "body",
        {
            "run_id": str(run.run.id) if run else None,
            **_zstream_view(),
            "zenml_flush": zenml_streaming.flush(30.0),
            "zstream_flush": zstream_mp.flush(30.0),
        },
    )


def _sha(token: str | None) -> str | None:
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


@step(enable_cache=False)
def reauth() -> int:
    """ZenML's store holds a token the server rejects: zstream_mp must log in again once.

    The store's access token (and its session header) is replaced by a bad one before
    this process publishes anything through zstream_mp, so the first POST gets a real
    401 from the ZenML server and `_zenml.refresh_token` must force a login through
    the store's API key. Everything published must arrive, and ZenML's own client must
    keep working afterwards.
    """
    from zenml.config.global_config import GlobalConfiguration

    from zstream_mp._zenml import credentials

    seen = _identity()
    store = GlobalConfiguration().zen_store
    good = store.get_or_generate_api_token()
    bad = "not-a-valid-token"
    store._api_token = store._api_token.model_copy(update={"access_token": bad})
    store.session.headers["Authorization"] = f"Bearer {bad}"
    poisoned = _zstream_view()
    for i in range(COUNT):
        zstream_mp.publish({"via": "zstream", "seq": i})
    ok = zstream_mp.flush(timeout=30.0)
    creds = credentials.current
    _write(
        seen["step_name"],
        {
            **seen,
            "poisoned": poisoned,
            "after": _zstream_view(),
            "zstream_flush": ok,
            "stats": _stats(),
            "good_token_sha": _sha(good),
            "bad_token_sha": _sha(bad),
            "store_token_sha": _sha(store.get_or_generate_api_token()),
            "cached_token_sha": _sha(creds.token if creds else None),
            "zenml_client_ok": str(store.get_run(seen["run_id"]).id) == seen["run_id"],
        },
    )
    return COUNT


@pipeline(enable_cache=False)
def reauth_pipeline() -> None:
    reauth()


PIPELINES = {
    "compare": compare_pipeline,
    "pool": pool_pipeline,
    "dynamic": dynamic_pipeline,
    "reauth": reauth_pipeline,
    "forkserver": forkserver_pipeline,
}


if __name__ == "__main__":
    if not os.path.isdir(".zen"):
        Client.initialize(root=Path.cwd())
    OUT.mkdir(parents=True, exist_ok=True)
    PIPELINES[MODE]()
    print(f"zsz pipeline {MODE} done", flush=True)
