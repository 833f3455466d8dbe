"""A publisher process for the fault tests, driven by a JSON list of steps.

    python fault_client.py URL RUN_ID '[{"publish": 100}, {"flush": 0.5}, ...]' [--token T]
                           [--durable] [--worker W]

`--durable` binds with `durable=True`; `--worker W` adds `"w": W` to every payload
(the producer's identity, for tests that count several producers on one run).

Steps, in order:
    {"publish": N}              N events tagged seq (continuing), with a secret marker
    {"publish": N, "kind": K}   ... with another kind
    {"flush": T}                flush(T); records the result and the elapsed time
    {"wait_file": PATH}         wait (up to 60 s) until PATH exists
    {"touch": PATH}             create PATH (tells the test a point was reached)
    {"sleep": S}
    {"setenv": {"K": "V"}}      change this process's environment
    {"stats": "label"}          record stats() under a label
    {"exit": "os._exit"}        leave at once, without exit hooks (default: return normally)

The report's `warned_at` lists, in seconds since the client started, when each WARNING
record was logged.

Every log record at WARNING or above, and every `warnings.warn`, is printed to stderr as
one line `ZSLOG|LEVEL|logger|message` so the test can count them. The last stdout line is a
JSON report: published seqs, flush results, stats snapshots.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from zstream_mp import bind, flush, publish, stats

MARKER = "SECRET-PAYLOAD-7f3a"
"""Carried by every payload; it must never show up in a log line."""


class OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\\n")
        return f"ZSLOG|{record.levelname}|{record.name}|{text}"


def snapshot() -> dict[str, Any]:
    st = stats()
    return {
        "published": st.published,
        "sent": st.sent,
        "queued": st.queued,
        "batches": st.batches,
        "retries": st.retries,
        "muted": st.muted,
        "spooled": st.spooled,
        "dropped": dict(st.dropped),
        "last_failure": st.last_failure,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("run")
    parser.add_argument("steps")
    parser.add_argument("--token", default=None)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--worker", default=None)
    args = parser.parse_args()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine("%(message)s"))
    logging.getLogger().addHandler(handler)
    started, started_wall = time.monotonic(), time.time()
    warned_at: list[float] = []
    timer = logging.Handler(logging.WARNING)
    timer.emit = lambda record: warned_at.append(record.created - started_wall)
    logging.getLogger().addHandler(timer)
    logging.getLogger().setLevel(logging.WARNING)
    logging.captureWarnings(True)

    bind(args.run, server=args.server, token=args.token, durable=args.durable)
    who = {} if args.worker is None else {"w": args.worker}
    report: dict[str, Any] = {"pid": os.getpid(), "seqs": [], "flushes": [], "stats": {}}
    seq = 0
    exit_mode = "return"
    for step in json.loads(args.steps):
        if "publish" in step:
            kind = step.get("kind", "event")
            for _ in range(int(step["publish"])):
                publish({"seq": seq, "secret": MARKER, **who}, kind=kind)
                report["seqs"].append(seq)
                seq += 1
        elif "flush" in step:
            t0 = time.monotonic()
            ok = flush(timeout=step["flush"])
            report["flushes"].append(
                {"timeout": step["flush"], "ok": ok, "elapsed": time.monotonic() - t0}
            )
        elif "wait_file" in step:
            deadline = time.monotonic() + 60
            while not os.path.exists(step["wait_file"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        elif "touch" in step:
            Path(step["touch"]).touch()
        elif "sleep" in step:
            time.sleep(step["sleep"])
        elif "setenv" in step:
            os.environ.update(step["setenv"])
        elif "stats" in step:
            report["stats"][step["stats"]] = snapshot()
        elif "exit" in step:
            exit_mode = step["exit"]
    report["stats"]["final"] = snapshot()
    report["warned_at"] = warned_at
    report["seconds"] = time.monotonic() - started
    print(json.dumps(report), flush=True)
    if exit_mode == "os._exit":
        os._exit(0)


if __name__ == "__main__":
    main()
