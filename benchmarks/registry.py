"""What the registry, durable mode and the exit spill cost.

Prints, from one run:
* ns per `publish()` with the registry (counters in the mmap'd page) vs without
  (`ZSTREAM_REGISTRY=0`, counters in private memory), target <= 1.1x;
* durable mode (every event appended to the mmap'd spool) vs the default, target <= 1.6x;
* the time to spool 4,096 queued events when an exit path runs out of budget, target
  <= 20 ms (the spill itself, and the whole exit hook with a zero budget).

`publish()` is timed with the sender parked on a server that accepts the connection and
never answers, so only the caller's work counts. The three modes run in one interpreter,
interleaved burst by burst (so they share the machine's state), in `--rounds` fresh
interpreters; the table shows medians.

Usage: python benchmarks/registry.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import run_child, table  # noqa: E402

PAYLOAD = {"worker": "w0", "seq": 0, "text": "the quick brown fox jumps over the lazy dog"}
BURST = 4000
MODES = {
    "no registry": {"ZSTREAM_REGISTRY": "0", "ZSTREAM_DURABLE": "0"},
    "registry": {"ZSTREAM_REGISTRY": "1", "ZSTREAM_DURABLE": "0"},
    "durable": {"ZSTREAM_REGISTRY": "1", "ZSTREAM_DURABLE": "1"},
}


def _parked_server() -> str:
    import socket

    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    _keep.append(sink)
    return f"http://127.0.0.1:{sink.getsockname()[1]}"


_keep: list[object] = []


def _child_publish(bursts: int) -> dict[str, float]:
    """All three modes in one process, interleaved burst by burst: one state per mode,
    swapped in between bursts, each with its sender parked on a server that never answers."""
    import uuid

    import zstream_mp
    from zstream_mp import _process

    zstream_mp.bind(str(uuid.uuid4()), server=_parked_server())
    publish = zstream_mp.publish
    states = {}
    for mode, env in MODES.items():
        os.environ.update(env)
        _process.current = None
        publish(PAYLOAD)
        states[mode] = _process.current
    time.sleep(0.2)  # every sender now waits for an answer that never comes

    def burst() -> float:
        t0 = time.perf_counter_ns()
        for i in range(BURST):
            PAYLOAD["seq"] = i
            publish(PAYLOAD, kind="token", correlation_id="w0", index=i)
        elapsed = (time.perf_counter_ns() - t0) / BURST
        _process.state().queue.discard("overflow")  # same queue state before every burst
        return elapsed

    samples: dict[str, list[float]] = {m: [] for m in MODES}
    for n in range(bursts + 1):
        for mode in MODES:
            _process.current = states[mode]
            ns = burst()
            if n:  # the first round warms up
                samples[mode].append(ns)
    return {m: statistics.median(v) for m, v in samples.items()}


def _child_spill(events: int) -> dict[str, float]:
    import uuid

    import zstream_mp
    from zstream_mp import _process

    zstream_mp.bind(str(uuid.uuid4()), server=_parked_server())
    for i in range(events + 1):
        PAYLOAD["seq"] = i
        zstream_mp.publish(PAYLOAD, kind="token", correlation_id="w0", index=i)
    time.sleep(0.2)  # one event is in flight, the rest queued
    st = _process.state()
    queued = st.queue.pending()
    t0 = time.perf_counter()
    spilled = st.spill.spill(st.queue, 0.0)
    spill_ms = (time.perf_counter() - t0) * 1000
    assert spilled == queued, (spilled, queued)
    # the whole exit hook, budget zero, on a second batch of queued events
    for i in range(events):
        zstream_mp.publish(PAYLOAD, kind="token", correlation_id="w0", index=i)
    st.exit_deadline = time.monotonic()
    t0 = time.perf_counter()
    _process.exit_flush()
    exit_ms = (time.perf_counter() - t0) * 1000
    return {"spill_ms": spill_ms, "exit_ms": exit_ms, "spilled": spilled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bursts", type=int, default=15)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind = args.child[0]
        out = _child_publish(args.bursts) if kind == "publish" else _child_spill(4096)
        print(json.dumps(out))
        return

    results: dict[str, list[float]] = {m: [] for m in MODES}
    spills: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as state:
        os.chmod(state, 0o700)
        base = {"ZSTREAM_STATE_DIR": state, "ZSTREAM_IDLE_EXIT": "600"}
        for _ in range(args.rounds):
            out = run_child(__file__, "publish", env=base)
            for mode in MODES:
                results[mode].append(out[mode])
            spills.append(run_child(__file__, "spill", env={**base, **MODES["registry"]}))
    ns = {m: statistics.median(v) for m, v in results.items()}
    table(
        f"publish() of a ~90-byte payload, caller's work alone (median of {args.rounds} "
        "interpreters, modes interleaved burst by burst)",
        ("mode", "ns/publish", "ratio", "target"),
        [
            ("no registry", f"{ns['no registry']:.0f}", "1.00x", ""),
            (
                "registry",
                f"{ns['registry']:.0f}",
                f"{ns['registry'] / ns['no registry']:.2f}x",
                "<= 1.1x vs no registry",
            ),
            (
                "durable",
                f"{ns['durable']:.0f}",
                f"{ns['durable'] / ns['registry']:.2f}x",
                "<= 1.6x vs registry (default)",
            ),
        ],
    )
    spill = statistics.median(s["spill_ms"] for s in spills)
    exit_ms = statistics.median(s["exit_ms"] for s in spills)
    table(
        f"exit with 4,096 events left (median of {args.rounds})",
        ("what", "ms", "target"),
        [
            (
                f"spill {int(spills[0]['spilled'])} queued events to the spool",
                f"{spill:.2f}",
                "<= 20 ms",
            ),
            ("the whole exit hook, zero budget left", f"{exit_ms:.2f}", ""),
        ],
    )


if __name__ == "__main__":
    main()
