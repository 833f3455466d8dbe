"""Ingest throughput of `POST /api/v1/runs/{id}/events`: ours (memory, Redis) vs ZenML 0.98.0.

    .venv/bin/python benchmarks/server_ingest.py [--repeats 3] [--no-zenml] [--table all]

`--table scale-out` (or `all`, the default) adds a second table: several client processes
spread round robin over 1, 2 and 3 replicas of our server on one redis-server, and over one
`serve --workers 2`, each posting pre-encoded batches to one run after a common start
barrier; the cell is all events over the wall time from the first start to the last
finish. The same clients against ZenML's server (one process) sit beside it.

Each cell posts a fixed number of events (batch size x requests, see REQUESTS) over one
keep-alive httpx client with bodies encoded before the clock starts, and reports the median
events/s of a few repeats. Loopback only. The ZenML column needs the peer from
../shared/peers/zenml (started if needed, with a held run so its posts are accepted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers import zenml_peer as zpeer  # noqa: E402
from helpers.redis import start_redis  # noqa: E402
from helpers.servers import start_server  # noqa: E402

from zstream_mp._wire import AUTHORIZATION, EVENTS_PATH, bearer  # noqa: E402

BATCH_SIZES = (1, 64, 1000)
REQUESTS = {1: 100, 64: 40, 1000: 10}  # events per cell = batch size x requests
TOKEN = "bench-token-0123456789"


def bodies(run_id: str, step_run_id: str | None, batch: int, requests: int) -> list[bytes]:
    out = []
    seq = 0
    for _ in range(requests):
        events = []
        for _ in range(batch):
            events.append(
                {
                    "pipeline_run_id": run_id,
                    "step_run_id": step_run_id,
                    "step_name": "bench",
                    "kind": "bench",
                    "correlation_id": "c",
                    "index": seq,
                    "payload": {"seq": seq, "text": "héllo ✓", "values": [1.5, 2, None]},
                }
            )
            seq += 1
        out.append(json.dumps({"events": events}).encode())
    return out


class Cell:
    """One target's keep-alive client; `once(batch)` posts one cell and returns events/s."""

    def __init__(self, url: str, token: str | None, run_id: str, step_run_id: str | None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers[AUTHORIZATION] = bearer(token)
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        self.client = httpx.Client(base_url=url, headers=headers, transport=transport, timeout=60)
        self.run_id, self.step_run_id = run_id, step_run_id
        self.path = EVENTS_PATH.format(run_id=run_id)
        self.client.post(self.path, content=b'{"events":[]}')  # connect outside the clock

    def once(self, batch: int) -> float:
        pre = bodies(self.run_id, self.step_run_id, batch, REQUESTS[batch])
        t0 = time.perf_counter()
        for body in pre:
            r = self.client.post(self.path, content=body)
            if r.status_code != 200:
                raise RuntimeError(f"{r.url}: {r.status_code} {r.text[:200]}")
        return batch * len(pre) / (time.perf_counter() - t0)


@contextlib.contextmanager
def ours(broker: str) -> Iterator[tuple[str, str | None, str]]:
    with contextlib.ExitStack() as stack:
        url = "memory"
        if broker == "redis":
            url = stack.enter_context(start_redis()).url
        srv = stack.enter_context(start_server(broker=url, token=TOKEN))
        yield srv.url, TOKEN, srv.create_run()


SCALE_BATCHES = (64, 1000)
SCALE_CLIENTS = 3
SCALE_REQUESTS = {64: 60, 1000: 8}  # per client
SCALE_SETUPS = (("1 replica", 1, 1), ("2 replicas", 2, 1), ("3 replicas", 3, 1))
WORKERS_SETUP = ("--workers 2", 1, 2)


def _scale_client(
    url: str,
    token: str | None,
    run_id: str,
    step_run_id: str | None,
    batch: int,
    barrier: Any,
    out: Any,
) -> None:
    """One client process: connect, wait for the others, post its batches, report timings."""
    cell = Cell(url, token, run_id, step_run_id)
    pre = bodies(run_id, step_run_id, batch, SCALE_REQUESTS[batch])
    barrier.wait()
    t0 = time.perf_counter()
    for body in pre:
        r = cell.client.post(cell.path, content=body)
        if r.status_code != 200:
            raise RuntimeError(f"{r.url}: {r.status_code} {r.text[:200]}")
    out.put((batch * len(pre), t0, time.perf_counter()))
    cell.client.close()


def scale_cell(
    urls: list[str], token: str | None, run_id: str, step_run_id: str | None, batch: int
) -> float:
    """Events/s of SCALE_CLIENTS processes spread round robin over `urls`."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(SCALE_CLIENTS), ctx.Queue()
    procs = [
        ctx.Process(
            target=_scale_client,
            args=(urls[i % len(urls)], token, run_id, step_run_id, batch, barrier, out),
        )
        for i in range(SCALE_CLIENTS)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
        if p.exitcode != 0:
            raise RuntimeError(f"client process exited with {p.exitcode}")
    events = sum(r[0] for r in results)
    return events / (max(r[2] for r in results) - min(r[1] for r in results))


def scale_out(repeats: int, with_zenml: bool) -> None:
    """The scale-out table: replicas (and --workers 2) on one Redis, ZenML's server beside."""
    targets: dict[str, tuple[list[str], str | None, str, str | None]] = {}
    note = ""
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(start_redis()).url
        for name, replicas, workers in (*SCALE_SETUPS, WORKERS_SETUP):
            servers = [
                stack.enter_context(
                    start_server(
                        broker=redis_url, token=TOKEN, workers=workers if workers > 1 else None
                    )
                )
                for _ in range(replicas)
            ]
            urls = [srv.url for srv in servers]
            targets[name] = (urls, TOKEN, servers[0].create_run(), str(uuid.uuid4()))
        if with_zenml:
            try:
                peer = zpeer.ensure_peer("redis")
                held = stack.enter_context(zpeer.held_run(peer))
                targets["ZenML 0.98.0"] = ([peer.url], peer.token, held.run_id, held.step_run_id)
            except zpeer.PeerUnavailable as exc:
                note = f"ZenML peer not measured: {exc}"
        samples: dict[str, dict[int, list[float]]] = {
            n: {b: [] for b in SCALE_BATCHES} for n in targets
        }
        for _ in range(repeats):
            for b in SCALE_BATCHES:
                for name, (urls, token, run_id, step) in targets.items():
                    samples[name][b].append(scale_cell(urls, token, run_id, step, b))
    results = {n: {b: statistics.median(v) for b, v in per.items()} for n, per in samples.items()}
    print()
    print(
        f"scale-out on one Redis: events/s, {SCALE_CLIENTS} client processes round robin over "
        f"the replicas (median of {repeats}; per client "
        f"{', '.join(f'batch {b}: {SCALE_REQUESTS[b]} requests' for b in SCALE_BATCHES)})"
    )
    base = "1 replica"
    print(
        f"{'setup':<14} " + " ".join(f"{'batch ' + str(b):>12} {'vs 1':>6}" for b in SCALE_BATCHES)
    )
    for name, per in results.items():
        cells = " ".join(
            f"{per[b]:>12,.0f} {per[b] / results[base][b]:>5.2f}x" for b in SCALE_BATCHES
        )
        print(f"{name:<14} {cells}")
    if note:
        print(note)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-zenml", action="store_true")
    ap.add_argument("--table", choices=("all", "ingest", "scale-out"), default="all")
    args = ap.parse_args()
    if args.table != "scale-out":
        ingest(args)
    if args.table != "ingest":
        scale_out(args.repeats, not args.no_zenml)
    return 0


def ingest(args: argparse.Namespace) -> None:
    """The single-client table: ours (memory, Redis) and ZenML's, one keep-alive client each."""
    cells: dict[str, Cell] = {}
    zenml_note = ""
    with contextlib.ExitStack() as stack:
        for name, broker in (("ours-memory", "memory"), ("ours-redis", "redis")):
            url, token, run_id = stack.enter_context(ours(broker))
            cells[name] = Cell(url, token, run_id, str(uuid.uuid4()))
        if not args.no_zenml:
            try:
                peer = zpeer.ensure_peer("redis")
                held = stack.enter_context(zpeer.held_run(peer))
                cells["zenml-redis"] = Cell(peer.url, peer.token, held.run_id, held.step_run_id)
            except zpeer.PeerUnavailable as exc:
                zenml_note = f"ZenML peer not measured: {exc}"
        # Round robin over repeats, sizes and targets so background load hits all alike.
        samples: dict[str, dict[int, list[float]]] = {
            n: {b: [] for b in BATCH_SIZES} for n in cells
        }
        for _ in range(args.repeats):
            for b in BATCH_SIZES:
                for name, cell in cells.items():
                    samples[name][b].append(cell.once(b))
        for cell in cells.values():
            cell.client.close()
    results = {n: {b: statistics.median(v) for b, v in per.items()} for n, per in samples.items()}
    cols = list(results)
    print(
        f"events/s ingested (median of {args.repeats}; events per cell = batch x "
        f"{', '.join(f'{b}:{REQUESTS[b]}' for b in BATCH_SIZES)} requests)"
    )
    header = f"{'batch':>6} " + " ".join(f"{c:>14}" for c in cols)
    if "zenml-redis" in results:
        header += " " + " ".join(f"{c + '/zenml':>20}" for c in cols if c != "zenml-redis")
    print(header)
    for b in BATCH_SIZES:
        line = f"{b:>6} " + " ".join(f"{results[c][b]:>14,.0f}" for c in cols)
        if "zenml-redis" in results:
            z = results["zenml-redis"][b]
            line += " " + " ".join(
                f"{results[c][b] / z:>19.2f}x" for c in cols if c != "zenml-redis"
            )
        print(line)
    if zenml_note:
        print(zenml_note)


if __name__ == "__main__":
    sys.exit(main())
