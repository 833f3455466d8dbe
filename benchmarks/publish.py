"""How much a publish() costs the caller, and how fast one process delivers.

Prints, from one run:
* ns per `publish()` of a ~100-byte payload (bound, with the sender running against our
  server), next to the floor: compact `json.dumps` + `deque.append`;
* `zenml.streaming.publish` per call when zenml is installed (here or in the ZenML peer
  venv), with its context lookup and sending stubbed out, so only the caller's work counts:
  its ratio is to the floor measured alone (no sender running), like `publish() alone`.
  The like-for-like comparison, both publishers real in one ZenML step, is
  `benchmarks/zenml_step.py`;
* ns per `publish()` per payload encoder (the stdlib's, orjson's with the `fast` extra),
  84 bytes and 65,000 bytes, queue free and full, next to the floor of the same payload;
* end-to-end events/s from one process to our server, next to the server's ingest ceiling
  (one keep-alive client posting pre-encoded batches of the same size).

Usage: python benchmarks/publish.py [--events N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# --against: a child measures the checkout it is told to (this one by default)
sys.path.insert(0, os.environ.get("ZSTREAM_BENCH_CHECKOUT") or str(HERE.parent))

from _common import end_to_end_rate, ingest_ceiling, new_run, run_child, server, table  # noqa: E402

PAYLOAD = {
    "worker": "w0",
    "seq": 0,
    "text": "the quick brown fox jumps over the lazy dog",
    "p": 0.5,
}
BURST = 4000  # the queue holds 4,096: a burst never overflows it
ZENML_PEER_PYTHON = Path(os.environ.get("ZENML_PEER_VENV", "/tmp/zenml-peer")) / "bin/python"


def _child_call_cost(url: str, bursts: int) -> dict[str, float]:
    """ns/call of publish() and of the floor, measured in the same process.

    Twice: once with the sender sending to our server at the same time (it shares the GIL
    with the caller), once with the sender parked on a server that accepts the connection
    and never answers, which is the caller's own work alone.
    """
    import collections
    import socket
    import statistics

    import zstream_mp

    dumps = json.dumps

    def floor_burst() -> float:
        d: collections.deque[str] = collections.deque(maxlen=4096)
        t0 = time.perf_counter_ns()
        for i in range(BURST):
            PAYLOAD["seq"] = i
            d.append(dumps(PAYLOAD, separators=(",", ":")))
        return (time.perf_counter_ns() - t0) / BURST

    def publish_burst(flush: bool) -> float:
        publish = zstream_mp.publish
        t0 = time.perf_counter_ns()
        for i in range(BURST):
            PAYLOAD["seq"] = i
            publish(PAYLOAD, kind="token", correlation_id="w0", index=i)
        elapsed = (time.perf_counter_ns() - t0) / BURST
        if flush:
            zstream_mp.flush(30)
        return elapsed

    results: dict[str, float] = {}
    zstream_mp.bind(new_run(url), server=url)
    floor_burst()
    publish_burst(True)
    floors, calls = [], []
    for _ in range(bursts):  # interleaved so both see the same machine state
        floors.append(floor_burst())
        calls.append(publish_burst(True))
    stats = zstream_mp.stats()
    assert stats.dropped_total == 0, stats
    results["publish_ns"] = statistics.median(calls)
    results["floor_ns"] = statistics.median(floors)

    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    zstream_mp.bind(new_run(url), server=f"http://127.0.0.1:{sink.getsockname()[1]}")
    publish_burst(False)
    time.sleep(0.2)  # the sender is now waiting for a response that never comes
    floors, calls = [], []
    for _ in range(bursts):
        floors.append(floor_burst())
        calls.append(publish_burst(False))  # the queue overflows: drop-oldest, counted
    results["publish_alone_ns"] = statistics.median(calls)
    results["floor_alone_ns"] = statistics.median(floors)
    return results


LARGE = 65_000
"""Bytes of compact JSON of the large payload (the payload limit is 65,536)."""


def large_payload() -> dict[str, object]:
    """A payload of `LARGE` bytes of compact JSON: a sequence number and one long text."""
    base = len(json.dumps({"seq": 0, "text": ""}, separators=(",", ":")))
    return {"seq": 0, "text": "x" * (LARGE - base - 4)}


def _child_paths(url: str, bursts: int) -> dict[str, float]:
    """ns/call of publish() per encoder, payload size and queue state, each beside the
    floor (compact `json.dumps` + `deque.append` of the same payload), interleaved.

    The sender is parked on a socket that never answers, so only the caller's work counts,
    as the CPU time of the calling thread (other processes on a busy machine do not count).
    Queue free: it is emptied between bursts (a burst of 2,000 never fills its 4,096);
    queue full: every append drops the oldest event and counts it.
    """
    import collections
    import socket
    import statistics

    import zstream_mp
    from zstream_mp import _encode, _event, _process

    dumps = json.dumps
    burst = 2000

    def floor_burst(payload: dict[str, object]) -> float:
        d: collections.deque[str] = collections.deque(maxlen=4096)
        t0 = time.thread_time_ns()
        for i in range(burst):
            payload["seq"] = i
            d.append(dumps(payload, separators=(",", ":")))
        return (time.thread_time_ns() - t0) / burst

    def publish_burst(payload: dict[str, object]) -> float:
        publish = zstream_mp.publish
        t0 = time.thread_time_ns()
        for i in range(burst):
            payload["seq"] = i
            publish(payload, kind="token")
        return (time.thread_time_ns() - t0) / burst

    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    zstream_mp.bind(new_run(url), server=f"http://127.0.0.1:{sink.getsockname()[1]}")
    zstream_mp.publish({"warm": True})
    time.sleep(0.2)  # the sender now waits for a response that never comes
    queue = _process.state().queue
    payloads = {"84B": dict(PAYLOAD), "64KiB": large_payload()}
    results: dict[str, float] = {}
    for size, payload in payloads.items():
        for encoder in _encode.ENCODERS:
            _event.use_encoder(encoder)
            for state in ("free", "full"):
                floors, calls = [], []
                for _ in range(bursts):
                    floors.append(floor_burst(payload))
                    if state == "free":
                        queue._discard_waiting()  # type: ignore[attr-defined]
                    else:
                        while queue.pending() < 4096:
                            publish_burst(payload)
                    calls.append(publish_burst(payload))
                results[f"{encoder}_{size}_{state}_ns"] = statistics.median(calls)
                results[f"floor_{size}_{encoder}_{state}_ns"] = statistics.median(floors)
    return results


def _child_zenml_cost(bursts: int) -> dict[str, float]:
    """zenml.streaming.publish's caller-side work: validation, size check, enqueue.

    Its context lookup is replaced by a constant and its sending by a no-op, so this is a
    lower bound of what it costs in a step (and its sender never competes for the GIL).
    """
    import statistics
    import uuid

    from zenml.streaming import publishing

    run, step = uuid.uuid4(), uuid.uuid4()
    ctx = publishing._PublishContext(run, step, "bench")  # type: ignore[attr-defined]
    publishing._resolve_publish_context = lambda: ctx  # type: ignore[attr-defined]
    publishing._StreamPublisher._send_batch = lambda self, batch: None  # type: ignore[attr-defined]
    publish = publishing.publish

    def burst() -> float:
        t0 = time.perf_counter_ns()
        for i in range(BURST):
            PAYLOAD["seq"] = i
            publish(PAYLOAD, kind="token", correlation_id="w0", index=i)
        elapsed = (time.perf_counter_ns() - t0) / BURST
        publishing.flush(10)
        return elapsed

    burst()
    return {"zenml_ns": statistics.median(burst() for _ in range(bursts))}


def _run_child(
    python: str,
    mode: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    return run_child(__file__, mode, *args, python=python, env=env, timeout=600)


def _compare(other: Path, bursts: int, rounds: int) -> None:
    """This checkout's publish() against another's, in alternating children, same server."""
    import statistics

    here = str(HERE.parent)
    measured: dict[str, dict[str, list[float]]] = {here: {}, str(other): {}}
    with server() as url:
        for _ in range(rounds):
            for checkout in (str(other), here):
                env = {"ZSTREAM_BENCH_CHECKOUT": checkout}
                cost = _run_child(sys.executable, "cost", url, str(bursts), env=env)
                for key, value in cost.items():
                    measured[checkout].setdefault(key, []).append(value)
    rows = []
    for key, label in (
        ("publish_alone_ns", "publish(), caller's work alone (queue full, drop-oldest)"),
        ("publish_ns", "publish(), sender busy (GIL)"),
    ):
        ours = statistics.median(measured[here][key])
        theirs = statistics.median(measured[str(other)][key])
        floor = statistics.median(measured[here][key.replace("publish", "floor")])
        rows.append(
            [label, f"{theirs:.0f}", f"{ours:.0f}", f"{ours / theirs:.2f}x", f"{floor:.0f}"]
        )
    table(
        f"ns per call, median of {rounds} interleaved rounds; baseline: {other}",
        ["measure", "baseline", "this checkout", "ratio", "floor"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--bursts", type=int, default=15)
    parser.add_argument("--child", nargs="+")
    parser.add_argument(
        "--against",
        metavar="CHECKOUT",
        help="another checkout of zstream-mp (a git worktree of an earlier commit): "
        "measure the caller's cost of both, interleaved, and print their ratio",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --against")
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "cost":
            result = _child_call_cost(rest[0], int(rest[1]))
        elif mode == "paths":
            result = _child_paths(rest[0], int(rest[1]))
        elif mode == "e2e":
            result = end_to_end_rate(rest[0], int(rest[1]), PAYLOAD, BURST)
        else:
            result = _child_zenml_cost(int(rest[0]))
        print(json.dumps(result))
        return

    if args.against:
        _compare(Path(args.against).resolve(), args.bursts, args.rounds)
        return
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; payload "
        f"{len(json.dumps(PAYLOAD, separators=(',', ':')))} bytes of compact JSON"
    )
    with server() as url:
        cost = _run_child(sys.executable, "cost", url, str(args.bursts))
        rows = [
            [
                "zstream_mp.publish(), caller's work alone",
                f"{cost['publish_alone_ns']:.0f}",
                f"{cost['publish_alone_ns'] / cost['floor_alone_ns']:.2f}x",
            ],
            ["  floor: json.dumps + deque.append", f"{cost['floor_alone_ns']:.0f}", "1.00x"],
            [
                "zstream_mp.publish(), sender busy (GIL)",
                f"{cost['publish_ns']:.0f}",
                f"{cost['publish_ns'] / cost['floor_ns']:.2f}x",
            ],
            ["  floor, same moments", f"{cost['floor_ns']:.0f}", "1.00x"],
        ]
        if _has_zenml(sys.executable):
            z = _run_child(sys.executable, "zenml", str(args.bursts))
            rows.append(
                [
                    "zenml.streaming.publish (this Python)",
                    f"{z['zenml_ns']:.0f}",
                    f"{z['zenml_ns'] / cost['floor_alone_ns']:.2f}x",
                ]
            )
        elif ZENML_PEER_PYTHON.exists() and _has_zenml(str(ZENML_PEER_PYTHON)):
            z = _run_child(
                str(ZENML_PEER_PYTHON),
                "zenml",
                str(args.bursts),
                env={"ZENML_ANALYTICS_OPT_IN": "false"},
            )
            ours = _run_child(
                str(ZENML_PEER_PYTHON),
                "cost",
                url,
                str(args.bursts),
                env={"PYTHONPATH": str(HERE.parent)},
            )
            rows.append(
                [
                    f"zenml.streaming.publish ({_version(str(ZENML_PEER_PYTHON))})",
                    f"{z['zenml_ns']:.0f}",
                    f"{z['zenml_ns'] / ours['floor_alone_ns']:.2f}x",
                ]
            )
            rows.append(
                [
                    f"  floor alone ({_version(str(ZENML_PEER_PYTHON))})",
                    f"{ours['floor_alone_ns']:.0f}",
                    "1.00x",
                ]
            )
            rows.append(
                [
                    f"zstream_mp.publish() alone ({_version(str(ZENML_PEER_PYTHON))})",
                    f"{ours['publish_alone_ns']:.0f}",
                    f"{ours['publish_alone_ns'] / ours['floor_alone_ns']:.2f}x",
                ]
            )
        else:
            rows.append(["zenml.streaming.publish", "n/a", "zenml not installed"])
        table(
            "Caller's cost per call (median of bursts of 4,000; ratio to the floor in the "
            "same interpreter)",
            ["what", "ns/call", "vs floor"],
            rows,
        )

        paths = _run_child(sys.executable, "paths", url, str(args.bursts))
        rows = []
        for encoder in ("stdlib", "orjson"):
            for size in ("84B", "64KiB"):
                for state in ("free", "full"):
                    value = paths.get(f"{encoder}_{size}_{state}_ns")
                    if value is None:
                        continue
                    floor = paths[f"floor_{size}_{encoder}_{state}_ns"]
                    rows.append(
                        [
                            f"{encoder}, {size}, queue {state}",
                            f"{value:,.0f}",
                            f"{floor:,.0f}",
                            f"{value / floor:.2f}x",
                        ]
                    )
        if "orjson_84B_free_ns" not in paths:
            rows.append(["orjson", "n/a", "", "the fast extra is not installed"])
        table(
            "publish() per payload encoder (caller's CPU time, median of bursts of 2,000; the "
            "floor is json.dumps + deque.append of the same payload, same process)",
            ["encoder, payload, queue", "ns/call", "floor ns/call", "vs floor"],
            rows,
        )

        rows = []
        for batch in (64, 1000):
            e2e = _run_child(
                sys.executable,
                "e2e",
                url,
                str(args.events),
                env={"ZENML_STREAM_PUBLISHER_BATCH_SIZE": str(batch)},
            )
            ceiling = ingest_ceiling(url, batch, args.events)
            rows.append(
                [
                    batch,
                    f"{e2e['rate']:,.0f}",
                    f"{ceiling:,.0f}",
                    f"{e2e['rate'] / ceiling:.0%}",
                    int(e2e["sent"]),
                    int(e2e["dropped"]),
                ]
            )
        table(
            f"One process to our server (memory broker), {args.events:,} events",
            ["batch", "publisher ev/s", "ceiling ev/s", "of ceiling", "sent", "dropped"],
            rows,
        )


def _has_zenml(python: str) -> bool:
    return (
        subprocess.run(
            [python, "-c", "import zenml.streaming"], capture_output=True, timeout=120
        ).returncode
        == 0
    )


def _version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True
    )
    return f"Python {out.stdout.strip()}"


if __name__ == "__main__":
    main()
