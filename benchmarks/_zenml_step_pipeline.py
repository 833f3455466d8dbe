"""The step `benchmarks/zenml_step.py` runs: ZenML's publisher and ours, same step, same run.

Runs in the ZenML peer venv on the local orchestrator. Usage:
`python _zenml_step_pipeline.py OUT_JSON`. Every measurement alternates the two
publishers (ZenML's `zenml.streaming.publish` and `zstream_mp.publish`), each real:
its own context lookup, its own queue, its own sender thread, the real server.

* `call_ns`: ns per `publish()` in the caller's thread, calls in bursts of 2,000 with a
  `flush()` between bursts (so neither queue overflows and both senders are sending);
* `call_ns_full`: the same with the queue full: 100,000 publishes in a tight loop, every
  one past the first ~4,096 dropping the oldest event (both publishers drop the oldest);
  ours is measured with each payload encoder it has here (`zstream_mp`: the stdlib's,
  `zstream_mp_fast`: orjson's, when the `fast` extra is importable);
* `events_per_s`: events delivered per second, 20,000 events in bursts of 4,000, each
  burst flushed (the rate counts only what was delivered; drops are reported);
* `latency_ms`: publish → SSE arrival at 100 events/s, read by a subscriber of the same
  run on ZenML's server (one kind per publisher);
* `ceiling`: one raw keep-alive client posting pre-encoded batches of 64 of the same event
  (all seven fields, as both publishers send them from a step) to the same server.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from zenml import pipeline, step
from zenml import streaming as zenml_streaming
from zenml.steps import get_step_context

import zstream_mp

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "zenml_step_bench.json")
CALLS_ONLY = os.environ.get("ZSTREAM_BENCH_CALLS_ONLY") == "1"
"""Measure the caller's cost only (no throughput, ceiling or latency)."""
PAYLOAD = {"worker": "w0", "seq": 0, "text": "the quick brown fox jumps over the lazy dog"}
PUBLISHERS = {"zenml": zenml_streaming, "zstream_mp": zstream_mp}


def _call_cost(module: Any, kind: str, bursts: int = 5, burst: int = 2000) -> float:
    publish = module.publish
    per_call = []
    for _ in range(bursts):
        started = time.perf_counter_ns()
        for _ in range(burst):
            publish(PAYLOAD, kind=kind)
        per_call.append((time.perf_counter_ns() - started) / burst)
        module.flush(60.0)
    return statistics.median(per_call)


def _variants() -> dict[str, tuple[Any, str | None]]:
    """Publishers measured for the caller's cost: ZenML's, and ours per payload encoder."""
    from zstream_mp import _encode

    found: dict[str, tuple[Any, str | None]] = {
        "zenml": (zenml_streaming, None),
        "zstream_mp": (zstream_mp, "stdlib"),
    }
    if "orjson" in _encode.ENCODERS:
        found["zstream_mp_fast"] = (zstream_mp, "orjson")
    return found


def _use(encoder: str | None) -> None:
    if encoder is not None:
        from zstream_mp import _event

        _event.use_encoder(encoder)


def _call_cost_full(module: Any, kind: str, calls: int = 100_000) -> float:
    """ns per call of `calls` publishes in a tight loop: the queue fills and drops the oldest."""
    publish = module.publish
    started = time.perf_counter_ns()
    for _ in range(calls):
        publish(PAYLOAD, kind=kind)
    per_call = (time.perf_counter_ns() - started) / calls
    module.flush(60.0)
    return per_call


def _throughput(module: Any, kind: str, events: int = 20_000, burst: int = 4000) -> float:
    publish = module.publish
    started = time.perf_counter()
    for start in range(0, events, burst):
        for i in range(start, min(events, start + burst)):
            publish({**PAYLOAD, "seq": i}, kind=kind)
        if not module.flush(120.0):
            raise RuntimeError(f"{kind}: flush timed out")
    return events / (time.perf_counter() - started)


class _Latency:
    """A subscriber thread on the run's stream recording arrival times per kind."""

    def __init__(self, server: str, token: str, run_id: str) -> None:
        self.arrived: dict[str, list[float]] = {}
        self._thread = threading.Thread(
            target=self._read, args=(server, token, run_id), daemon=True
        )
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(10)

    def _read(self, server: str, token: str, run_id: str) -> None:
        from zstream_mp.consumer import Event

        stream = zstream_mp.subscribe(
            server, run_id, token=token, kinds=["lat-zenml", "lat-zstream_mp"], timeout=300
        )
        self._ready.set()
        for item in stream:
            if isinstance(item, Event) and "sent" in item.payload:
                now = time.time()
                self.arrived.setdefault(item.kind, []).append(now - item.payload["sent"])


def _latency(lat: _Latency, module: Any, kind: str, rate: float = 100.0, n: int = 500) -> None:
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(n):
        module.publish({"seq": i, "sent": time.time()}, kind=kind)
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    module.flush(30.0)


def _ceiling(
    server: str, token: str, ids: dict[str, str], batch: int = 64, events: int = 20_000
) -> float:
    # The event both publishers send from a step: all seven fields, the step's ids included
    # (the server validates and stores each; fewer fields would be a cheaper request).
    run_id = ids["pipeline_run_id"]
    event = json.dumps(
        {**ids, "kind": "ceiling", "correlation_id": None, "index": None, "payload": PAYLOAD},
        separators=(",", ":"),
    ).encode()
    body = b'{"events":[' + b",".join([event] * batch) + b"]}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = f"{server}/api/v1/runs/{run_id}/events"
    with httpx.Client(headers=headers, timeout=30) as client:
        client.post(url, content=body).raise_for_status()
        started = time.perf_counter()
        for _ in range(events // batch):
            client.post(url, content=body).raise_for_status()
        return (events // batch) * batch / (time.perf_counter() - started)


@step(enable_cache=False)
def bench() -> int:
    step_context = get_step_context()
    run_id = str(step_context.pipeline_run.id)
    ids = {
        "pipeline_run_id": run_id,
        "step_run_id": str(step_context.step_run.id),
        "step_name": step_context.step_name,
    }
    context = zstream_mp.current_context()
    assert context is not None and context.server and context.token
    server, token = context.server, context.token
    results: dict[str, Any] = {"python": sys.version.split()[0]}
    variants = _variants()
    for name, (module, encoder) in variants.items():  # warm all: threads, clients, caches
        _use(encoder)
        _call_cost(module, f"warm-{name}", bursts=1, burst=200)
    costs: dict[str, list[float]] = {name: [] for name in variants}
    full: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):  # interleaved: the step's machine drifts over a run
        for name, (module, encoder) in variants.items():
            _use(encoder)
            costs[name].append(_call_cost(module, f"cost-{name}"))
            full[name].append(_call_cost_full(module, f"full-{name}"))
    _use("stdlib")  # what follows is measured without the extra
    results["call_ns"] = {k: statistics.median(v) for k, v in costs.items()}
    results["call_ns_full"] = {k: statistics.median(v) for k, v in full.items()}
    results["dropped_full"] = {"zstream_mp": dict(zstream_mp.stats().dropped)}
    if CALLS_ONLY:
        OUT.write_text(json.dumps(results))
        return 0
    dropped_before = dict(zstream_mp.stats().dropped)
    rates: dict[str, list[float]] = {name: [] for name in PUBLISHERS}
    ceilings: list[float] = []
    for _ in range(3):  # interleaved: the server's pace drifts over a run
        for name, module in PUBLISHERS.items():
            rates[name].append(_throughput(module, f"tput-{name}"))
        ceilings.append(_ceiling(server, token, ids))
    results["events_per_s"] = {k: max(v) for k, v in rates.items()}
    dropped = {k: n - dropped_before.get(k, 0) for k, n in zstream_mp.stats().dropped.items()}
    results["dropped"] = {"zstream_mp": dropped}
    results["ceiling"] = max(ceilings)
    lat = _Latency(server, token, run_id)
    for name, module in PUBLISHERS.items():
        _latency(lat, module, f"lat-{name}")
    time.sleep(2.0)
    results["latency_ms"] = {}
    for name in PUBLISHERS:
        got = sorted(1000 * x for x in lat.arrived.get(f"lat-{name}", []))
        if got:
            results["latency_ms"][name] = {
                "n": len(got),
                "p50": got[len(got) // 2],
                "p99": got[min(len(got) - 1, int(len(got) * 0.99))],
            }
    OUT.write_text(json.dumps(results))
    return 0


@pipeline(enable_cache=False)
def bench_pipeline() -> None:
    bench()


if __name__ == "__main__":
    bench_pipeline()
