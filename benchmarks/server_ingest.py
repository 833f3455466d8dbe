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
    """One target's keep-alive client; ``once(batch)`` posts one cell and returns events/s."""

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-zenml", action="store_true")
    args = ap.parse_args()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
