"""Ingest throughput of `POST /api/v1/runs/{id}/events`: ours (memory, Redis) vs ZenML 0.98.0.

    .venv/bin/python benchmarks/server_ingest.py [--repeats 3] [--no-zenml]

Each cell posts a fixed number of events (batch size x requests, see REQUESTS) over one
keep-alive httpx client with bodies encoded before the clock starts, and reports the median
events/s of a few repeats. Loopback only. The ZenML column needs the peer from
../shared/peers/zenml (started if needed, with a held run so its posts are accepted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import _zenml_peer as zpeer  # noqa: E402
from _servers import start_redis, start_server  # noqa: E402

BATCH_SIZES = (1, 64, 1000)
REQUESTS = {1: 100, 64: 40, 1000: 10}  # events per cell = batch size x requests
TOKEN = "bench-token-0123456789"


def bodies(run_id: str, step_run_id: str | None, batch: int, requests: int) -> list[bytes]:
    out = []
    seq = 0
    for _ in range(requests):
        events = []
        for _ in range(batch):
            events.append({"pipeline_run_id": run_id, "step_run_id": step_run_id,
                           "step_name": "bench", "kind": "bench", "correlation_id": "c",
                           "index": seq, "payload": {"seq": seq, "text": "héllo ✓",
                                                     "values": [1.5, 2, None]}})
            seq += 1
        out.append(json.dumps({"events": events}).encode())
    return out


def measure(url: str, token: str | None, run_id: str, step_run_id: str | None, batch: int,
            repeats: int) -> float:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    transport = httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    rates = []
    with httpx.Client(base_url=url, headers=headers, transport=transport, timeout=60) as c:
        path = f"/api/v1/runs/{run_id}/events"
        c.post(path, content=b'{"events":[]}')  # open the connection outside the clock
        for _ in range(repeats):
            pre = bodies(run_id, step_run_id, batch, REQUESTS[batch])
            t0 = time.perf_counter()
            for body in pre:
                r = c.post(path, content=body)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
            rates.append(batch * len(pre) / (time.perf_counter() - t0))
    return statistics.median(rates)


@contextlib.contextmanager
def ours(broker: str) -> Iterator[tuple[str, str | None, str]]:
    with contextlib.ExitStack() as stack:
        url = "memory"
        if broker == "redis":
            url = stack.enter_context(start_redis()).url
        srv = stack.enter_context(start_server(broker=url, token=TOKEN))
        r = httpx.post(f"{srv.url}/api/v1/zstream/runs", json={},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        r.raise_for_status()
        yield srv.url, TOKEN, str(r.json()["id"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-zenml", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict[int, float]] = {}
    for name, broker in (("ours-memory", "memory"), ("ours-redis", "redis")):
        with ours(broker) as (url, token, run_id):
            results[name] = {b: measure(url, token, run_id, str(uuid.uuid4()), b, args.repeats)
                             for b in BATCH_SIZES}
    zenml_note = ""
    if not args.no_zenml:
        try:
            peer = zpeer.ensure_peer("redis")
            with zpeer.held_run(peer) as held:
                results["zenml-redis"] = {
                    b: measure(peer.url, peer.token, held.run_id, held.step_run_id, b,
                               args.repeats) for b in BATCH_SIZES}
        except zpeer.PeerUnavailable as exc:
            zenml_note = f"ZenML peer not measured: {exc}"
    cols = list(results)
    print(f"events/s ingested (median of {args.repeats}; events per cell = batch x "
          f"{', '.join(f'{b}:{REQUESTS[b]}' for b in BATCH_SIZES)} requests)")
    header = f"{'batch':>6} " + " ".join(f"{c:>14}" for c in cols)
    if "zenml-redis" in results:
        header += " " + " ".join(f"{c + '/zenml':>20}" for c in cols if c != "zenml-redis")
    print(header)
    for b in BATCH_SIZES:
        line = f"{b:>6} " + " ".join(f"{results[c][b]:>14,.0f}" for c in cols)
        if "zenml-redis" in results:
            z = results["zenml-redis"][b]
            line += " " + " ".join(f"{results[c][b] / z:>19.2f}x" for c in cols
                                   if c != "zenml-redis")
        print(line)
    if zenml_note:
        print(zenml_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
