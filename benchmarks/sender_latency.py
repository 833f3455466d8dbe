"""The sender's throughput and publish → SSE latency, beside their targets.

Rows, each measured in the same run as its baseline:

* one publishing process vs the raw-client ceiling at batch 64 and 1,000 (the ceiling is
  `_common.ingest_ceiling`: one keep-alive httpx client posting pre-encoded batches of the
  same events back to back, measured right before and right after each publisher run).
  Target: ≥ 90%;
* publish → SSE on our server at 100 and 1,000 events/s, p50 and p99: the publisher and the
  subscriber are processes of their own; the subscriber reads the stream over a raw socket
  and stamps each event when its frame arrives (so a consumer's parsing is not counted).
  Target: p50 ≤ 1 ms, p99 ≤ 3 ms. The baseline column is the same percentile of one
  loopback POST of one event to the same server over a raw socket, at the same rate (the
  floor: the server's own handling and two wake-ups);
* publish → SSE on ZenML's server (the peer, Redis broker), ours against ZenML's own
  publisher (`zenml.streaming.publish`, its context lookup replaced by the held run's ids, its
  real sender and store), 24 s of events each in alternating segments (`ZENML_SECONDS`):
  target ours ≤ ZenML's;
* server ingest at batch 64: ours (memory and Redis) against ZenML's server (Redis), one
  keep-alive client each (`server_ingest.Cell`). Target: ≥ 10x.

Usage: python benchmarks/sender_latency.py [--quick] [--no-zenml]
`rows(quick)` returns the rows as dicts for `benchmarks/targets.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import (  # noqa: E402
    end_to_end_rate,
    event_bytes,
    ingest_ceiling,
    new_run,
    run_child,
    server,
    table,
    target_row,
)

PAYLOAD = {
    "worker": "w0",
    "seq": 0,
    "text": "the quick brown fox jumps over the lazy dog",
    "p": 0.5,
}
BURST = 4000  # the queue holds 4,096: a burst never overflows it
RATES = (100, 1000)
THROUGHPUT_TARGET = 0.90
P50_TARGET_MS = 1.0
P99_TARGET_MS = 3.0
INGEST_TARGET = 10.0
ZENML_SECONDS = {False: 24.0, True: 8.0}
"""Seconds of publishing per publisher and rate on ZenML's server (full, `--quick`).

Under this load ZenML's server stops answering for 350-400 ms about every 7 s (one POST
waits that long whichever publisher sent it; measured with each POST timed). Those pauses
set both publishers' p99, so each publisher must see several: a few seconds of samples
gives whichever publisher ran through a pause the worse p99 by chance."""
ZENML_SEGMENTS = {False: 8, True: 4}
"""Alternating segments per publisher and rate: a pause or a load spike hits both alike."""


# --------------------------------------------------------------------------- children


def _paced(publish: Any, kind: str, rate: float, count: int) -> None:
    """`count` events of `kind` at `rate` per second, each stamped with its publish time."""
    gap = 1.0 / rate
    start = time.perf_counter()
    for i in range(count):
        target = start + i * gap
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        publish({"seq": i, "t": time.monotonic_ns()}, kind=kind)


def _child_paced_ours(url: str, run_id: str, token: str, kind: str, rate: str, count: str) -> dict:
    import zstream_mp

    zstream_mp.bind(run_id, server=url, token=token or None)
    zstream_mp.publish({"warm": True}, kind=f"{kind}-warm")  # thread, connection
    zstream_mp.flush(10)
    time.sleep(0.2)
    _paced(zstream_mp.publish, kind, float(rate), int(count))
    ok = zstream_mp.flush(30)
    return {"flushed": ok, "dropped": zstream_mp.stats().dropped_total}


def _child_paced_zenml(run_id: str, step_run_id: str, kind: str, rate: str, count: str) -> dict:
    """ZenML's publisher as a step uses it, its context given (the held run's ids)."""
    from uuid import UUID

    from zenml.streaming import publishing

    ctx = publishing._PublishContext(UUID(run_id), UUID(step_run_id), "bench")
    publishing._resolve_publish_context = lambda: ctx
    publishing.publish({"warm": True}, kind=f"{kind}-warm")  # thread, store login
    ok = publishing.flush(30)
    time.sleep(0.2)
    _paced(publishing.publish, kind, float(rate), int(count))
    ok = publishing.flush(30) and ok
    return {"flushed": ok}


def _child_subscribe(url: str, run_id: str, token: str, kind: str, count: str) -> None:
    """Read the run's stream over a raw socket; print `ready`, then the latencies (ms)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (
        f"GET /api/v1/runs/{run_id}/events/stream?kinds={kind} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    )
    sock.sendall(request.encode())
    sock.settimeout(120)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise RuntimeError(f"subscribe failed: {head[:200]!r}")
    sock.settimeout(0.5)  # the run's history (other kinds: cursor frames) first, until quiet
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pass
    sock.settimeout(120)
    buffer = b""
    print("ready", flush=True)
    wanted = int(count)
    latencies: list[float] = []
    marker = f'"kind":"{kind}"'.encode()
    while len(latencies) < wanted:
        chunk = sock.recv(65536)
        now = time.monotonic_ns()
        if not chunk:
            break
        buffer += chunk
        for line in buffer.split(b"\n")[:-1]:
            if line.startswith(b"data:") and marker in line:
                at = line.find(b'"t":')
                sent = int(line[at + 4 :].split(b",")[0].split(b"}")[0])
                latencies.append((now - sent) / 1e6)
        buffer = buffer[buffer.rfind(b"\n") + 1 :]
    print(json.dumps(latencies), flush=True)


# --------------------------------------------------------------------------- measuring


def _state_env() -> dict[str, str]:
    """A state dir of its own: no other process's spools to adopt meanwhile."""
    path = tempfile.mkdtemp(prefix="zstream-bench-state-")
    os.chmod(path, 0o700)
    return {"ZSTREAM_STATE_DIR": path}


def throughput(url: str, events: int, rounds: int) -> dict[int, tuple[float, float, float]]:
    """By batch size: median publisher ev/s, median ceiling ev/s, median per-round ratio.

    Each publisher run is bracketed by a ceiling run before and after it (their mean is its
    baseline): on a shared machine the server's pace drifts within seconds.
    """
    out: dict[int, tuple[float, float, float]] = {}
    samples: dict[int, list[tuple[float, float]]] = {64: [], 1000: []}
    for _ in range(rounds):
        for batch in samples:
            env = {"ZENML_STREAM_PUBLISHER_BATCH_SIZE": str(batch), **_state_env()}
            before = ingest_ceiling(url, batch, events, repeats=1)
            e2e = run_child(__file__, "e2e", url, str(events), env=env, timeout=600)
            if e2e["dropped"]:
                raise RuntimeError(f"the publisher dropped {e2e['dropped']} events")
            after = ingest_ceiling(url, batch, events, repeats=1)
            samples[batch].append((e2e["rate"], (before + after) / 2))
    for batch, pairs in samples.items():
        out[batch] = (
            statistics.median(p for p, _ in pairs),
            statistics.median(c for _, c in pairs),
            statistics.median(p / c for p, c in pairs),
        )
    return out


def latency(
    url: str,
    run_id: str,
    token: str | None,
    rate: int,
    count: int,
    publisher: list[str],
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> list[float]:
    """Milliseconds from publish (child) to the frame's arrival (another child)."""
    kind = f"lat{uuid.uuid4().hex[:8]}"
    args = [url, run_id, token or "", kind, str(count)]
    sub = subprocess.Popen(
        [sys.executable, __file__, "--child", "subscribe", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber did not start")
        time.sleep(0.3)
        run_child(
            __file__,
            *publisher,
            kind,
            str(rate),
            str(count),
            python=python,
            env={**_state_env(), **(env or {})},
            timeout=300,
        )
        out, _ = sub.communicate(timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    got: list[float] = json.loads(out.strip().splitlines()[-1])
    if len(got) < count:
        raise RuntimeError(f"the subscriber saw {len(got)} of {count} events")
    return got


def round_trips(url: str, count: int, rate: float) -> list[float]:
    """Milliseconds of one loopback POST of one event over a raw keep-alive socket, answer
    read, at `rate` per second: the floor under any publish -> SSE latency on that server."""
    from zstream_mp._wire import batch_body, events_url

    run_id = new_run(url)
    parts = urlsplit(events_url(url, run_id))
    sock = socket.create_connection((parts.hostname or "", parts.port or 80))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out: list[float] = []
    with sock:
        for i in range(count):
            body = batch_body([event_bytes(run_id, i)])
            head = (
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            started = time.perf_counter()
            sock.sendall(head.encode() + body)
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            out.append((time.perf_counter() - started) * 1000)
            time.sleep(1.0 / rate)
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@contextlib.contextmanager
def _zenml_peer() -> Iterator[tuple[Any, Any] | str]:
    """The ZenML peer and a run held in progress on it, or why there is none."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from helpers import zenml_peer as zpeer

    try:
        peer = zpeer.ensure_peer("redis")
        with zpeer.held_run(peer) as held:
            yield peer, held
    except zpeer.PeerUnavailable as exc:
        yield f"ZenML peer not measured: {exc}"


def _ingest_64(quick: bool, peer_held: tuple[Any, Any] | None) -> dict[str, float]:
    """Events/s at batch 64 of one keep-alive client: ours (memory, Redis), ZenML's."""
    import server_ingest as si

    repeats = 2 if quick else 3
    with contextlib.ExitStack() as stack:
        cells: dict[str, Any] = {}
        for name, broker in (("ours, memory", "memory"), ("ours, Redis", "redis")):
            url, token, run_id = stack.enter_context(si.ours(broker))
            cells[name] = si.Cell(url, token, run_id, str(uuid.uuid4()))
        if peer_held is not None:
            peer, held = peer_held
            cells["ZenML"] = si.Cell(peer.url, peer.token, held.run_id, held.step_run_id)
        samples: dict[str, list[float]] = {name: [] for name in cells}
        for _ in range(repeats):
            for name, cell in cells.items():
                samples[name].append(cell.once(64))
        for cell in cells.values():
            cell.client.close()
    return {name: statistics.median(v) for name, v in samples.items()}


def rows(quick: bool, zenml: bool = True) -> list[dict[str, Any]]:
    """Every row of this benchmark: measure, value, unit, baseline, baseline_value, ratio,
    target, met."""
    out: list[dict[str, Any]] = []
    events = 20_000 if quick else 40_000
    rounds = 2 if quick else 5
    counts = {100: 300 if quick else 1000, 1000: 1000 if quick else 5000}
    with server() as url:
        for batch, (rate, ceiling, ratio) in throughput(url, events, rounds).items():
            out.append(
                target_row(
                    f"one process vs raw-client ceiling, batch {batch}",
                    rate,
                    "events/s",
                    "raw keep-alive client, pre-encoded",
                    ceiling,
                    f">= {THROUGHPUT_TARGET:.2f}x",
                    ratio >= THROUGHPUT_TARGET,
                    ratio,
                )
            )
        ours: dict[int, list[float]] = {}
        floor: dict[int, list[float]] = {}
        for rate in RATES:
            run_id = new_run(url)
            ours[rate] = latency(url, run_id, None, rate, counts[rate], ["paced-ours", url, run_id])
            floor[rate] = round_trips(url, min(counts[rate], 1000), rate)
    note = ""
    theirs: dict[tuple[str, int], list[float]] = {}
    ingest: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        found: tuple[Any, Any] | str = "ZenML peer not measured (--no-zenml)"
        if zenml:
            found = stack.enter_context(_zenml_peer())
        peer_held = found if not isinstance(found, str) else None
        note = found if isinstance(found, str) else ""
        if peer_held is not None:
            theirs = _zenml_latencies(peer_held, quick)
        ingest = _ingest_64(quick, peer_held)
    for rate in RATES:
        for p, target in ((50, P50_TARGET_MS), (99, P99_TARGET_MS)):
            value = percentile(ours[rate], p)
            out.append(
                target_row(
                    f"publish -> SSE p{p}, our server, {rate} ev/s",
                    value,
                    "ms",
                    "one loopback POST round trip",
                    percentile(floor[rate], p),
                    f"<= {target:g} ms",
                    value <= target,
                )
            )
    for rate in RATES:
        for p in (50, 99):
            mine, zen = theirs.get(("ours", rate)), theirs.get(("zenml", rate))
            if not mine or not zen:
                continue
            value, base = percentile(mine, p), percentile(zen, p)
            out.append(
                target_row(
                    f"publish -> SSE p{p}, ZenML's server, {rate} ev/s, ours",
                    value,
                    "ms",
                    "ZenML's publisher",
                    base,
                    "<= 1.00x",
                    value <= base,
                )
            )
    for name in ("ours, memory", "ours, Redis"):
        zen_rate = ingest.get("ZenML")
        ratio = ingest[name] / zen_rate if zen_rate else None
        out.append(
            target_row(
                f"server ingest, batch 64, {name}",
                ingest[name],
                "events/s",
                "ZenML 0.98.0 (Redis)",
                zen_rate,
                f">= {INGEST_TARGET:g}x",
                ratio is not None and ratio >= INGEST_TARGET,
            )
        )
    if note:
        out.append(target_row(note, None, "", "", None, "", False))
    return out


def _zenml_latencies(peer_held: tuple[Any, Any], quick: bool) -> dict[tuple[str, int], list[float]]:
    """Publish → SSE on ZenML's server: ours and ZenML's publisher, alternating."""
    from helpers import zenml_peer as zpeer

    peer, held = peer_held
    work = Path(tempfile.mkdtemp(prefix="zstream-bench-zenml-"))
    (work / "home").mkdir()
    zenml_env = zpeer.client_env(peer, work)
    out: dict[tuple[str, int], list[float]] = {}
    for rate in RATES:
        segments = ZENML_SEGMENTS[quick]
        count = int(rate * ZENML_SECONDS[quick] / segments)
        for _ in range(segments):
            out.setdefault(("ours", rate), []).extend(
                latency(
                    peer.url,
                    held.run_id,
                    peer.token,
                    rate,
                    count,
                    ["paced-ours", peer.url, held.run_id, peer.token],
                )
            )
            out.setdefault(("zenml", rate), []).extend(
                latency(
                    peer.url,
                    held.run_id,
                    peer.token,
                    rate,
                    count,
                    ["paced-zenml", held.run_id, held.step_run_id],
                    python=peer.python,
                    env=zenml_env,
                )
            )
    return out


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if unit == "events/s" else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds")
    parser.add_argument("--no-zenml", action="store_true", help="skip ZenML's server")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "subscribe":
            _child_subscribe(*rest)
            return
        if mode == "e2e":
            result: dict[str, Any] = end_to_end_rate(rest[0], int(rest[1]), PAYLOAD, BURST)
        elif mode == "paced-ours":
            if len(rest) == 5:  # our server: no token
                rest.insert(2, "")
            result = _child_paced_ours(*rest)
        else:
            result = _child_paced_zenml(*rest)
        print(json.dumps(result))
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    found = rows(args.quick, zenml=not args.no_zenml)
    table(
        "The sender: throughput, publish -> SSE latency, server ingest (same run)",
        ["measure", "value", "unit", "baseline", "baseline value", "ratio", "target", "met"],
        [
            [
                r["measure"],
                _shown(r["value"], r["unit"]),
                r["unit"],
                r["baseline"],
                _shown(r["baseline_value"], r["unit"]),
                "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                r["target"],
                "yes" if r["met"] else "no",
            ]
            for r in found
        ],
    )


if __name__ == "__main__":
    main()
