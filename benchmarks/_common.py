"""Shared pieces of the benchmark scripts: a server subprocess, the ingest ceiling, tables.

Nothing from the package (nor httpx) is imported at module level: the ZenML comparison runs
these scripts in the ZenML peer's interpreter, which has neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def server(*extra: str) -> Iterator[str]:
    """`zstream-mp serve` on a free loopback port, for the duration of the block.

    Started as the demo and the tests start it (`zstream_mp.cli._serve_process`), in its
    own process so that it never shares the measured publisher's GIL.
    """
    from zstream_mp.cli._serve_process import start_serve

    with start_serve(extra) as served:
        yield served.url


def run_child(
    script: str,
    *args: str,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> dict[str, float]:
    """Run `script --child ARGS` in a fresh interpreter; its last stdout line is JSON."""
    repo = Path(script).resolve().parent.parent
    out = subprocess.run(
        [python, script, "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(repo),
        env={**os.environ, **(env or {})},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def new_run(url: str) -> str:
    import httpx

    from zstream_mp._wire import runs_url

    return str(httpx.post(runs_url(url), json={}).json()["id"])


def event_bytes(run_id: str, i: int) -> bytes:
    """One ~100-byte-payload event, encoded as the publisher encodes it."""
    return (
        f'{{"pipeline_run_id":"{run_id}","step_run_id":null,"step_name":"bench",'
        f'"kind":"token","correlation_id":"w0","index":{i},"payload":'
        f'{{"worker":"w0","seq":{i},"text":"the quick brown fox jumps over the lazy dog",'
        f'"p":0.5}}}}'
    ).encode()


def ingest_ceiling(
    url: str, batch: int, events: int, repeats: int = 3, token: str | None = None
) -> float:
    """Events/s one keep-alive client achieves posting pre-encoded batches back to back."""
    import httpx

    from zstream_mp._wire import AUTHORIZATION, bearer, events_url

    rates = []
    headers = {"Content-Type": "application/json"}
    if token:
        headers[AUTHORIZATION] = bearer(token)
    with httpx.Client(headers=headers, timeout=30) as client:
        for _ in range(repeats):
            run_id = new_run(url)
            bodies = [
                b'{"events":[' + b",".join(event_bytes(run_id, i + j) for j in range(batch)) + b"]}"
                for i in range(0, events, batch)
            ]
            target = events_url(url, run_id)
            started = time.perf_counter()
            for body in bodies:
                client.post(target, content=body).raise_for_status()
            rates.append(len(bodies) * batch / (time.perf_counter() - started))
    return statistics.median(rates)


def median_time(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if n and i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def unique_run() -> str:
    return str(uuid.uuid4())


def target_row(
    measure: str,
    value: float | None,
    unit: str,
    baseline: str,
    baseline_value: float | None,
    target: str,
    met: bool,
    ratio: float | None = None,
) -> dict[str, Any]:
    """One row of the targets table: a value, its same-run baseline, the ratio, the target."""
    if ratio is None and value is not None and baseline_value:
        ratio = value / baseline_value
    return {
        "measure": measure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def end_to_end_rate(url: str, events: int, payload: dict[str, Any], burst: int) -> dict[str, float]:
    """Events/s from this process's `publish()` calls to our server, in flushed bursts of
    `burst` (fewer than the queue holds, so none overflows)."""
    import zstream_mp

    zstream_mp.bind(new_run(url), server=url)
    zstream_mp.publish(payload)  # warm: thread, connection
    zstream_mp.flush(10)
    started = time.perf_counter()
    for start in range(0, events, burst):
        for i in range(start, min(events, start + burst)):
            payload["seq"] = i
            zstream_mp.publish(payload, kind="token", correlation_id="w0", index=i)
        zstream_mp.flush(60)
    elapsed = time.perf_counter() - started
    counted = zstream_mp.stats()
    return {"rate": events / elapsed, "sent": counted.sent - 1, "dropped": counted.dropped_total}
