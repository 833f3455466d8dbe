"""ZenML's publisher and ours inside the same real ZenML step, on ZenML's own server.

Runs `_zenml_step_pipeline.py` in the ZenML peer venv (../shared/peers/zenml, started if
needed) on the local orchestrator, with both publishers real and default settings, and prints:

* ns per `publish()` call in the caller's thread, queue free and queue full (100,000
  publishes in a tight loop), ours without the `fast` extra (target: ≤ 0.5x ZenML's) and
  with it (orjson, installed for the step from `FAST_EXTRA`; target: ≤ 0.25x ZenML's);
* events/s delivered without drops, both at batch 64 (target: ≥ ZenML's, and ≥ 95% of one raw
  keep-alive client's ceiling at the same batch size, measured in the same step);
* publish → SSE latency p50 / p99 at 100 events/s (target: ≤ ZenML's).

Usage: python benchmarks/zenml_step.py [--repeat N] [--calls-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from _common import table  # noqa: E402

PIPELINE = HERE / "_zenml_step_pipeline.py"
FAST_EXTRA = Path(tempfile.gettempdir()) / "zsz-fast-extra"
"""Where the `fast` extra (orjson) is installed for the peer's Python, kept out of its venv
and put on the step's `PYTHONPATH`."""
ORJSON_PIN = "orjson==3.13.0"
"""The orjson the extra was measured with."""


def fast_extra(python: str) -> Path | None:
    """The `fast` extra for `python` (installed once with pip's `--target`), or None."""
    out = subprocess.run(
        [python, "-c", "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
    )
    target = Path(f"{FAST_EXTRA}-py{out.stdout.strip()}")
    if not (target / "orjson").exists():
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        proc = subprocess.run(
            [*pip, "--target", str(target), ORJSON_PIN], capture_output=True, timeout=600
        )
        if proc.returncode != 0:
            return None
    return target


def run_once(peer: Any, work: Path, calls_only: bool = False) -> dict[str, Any]:
    from helpers import zenml_peer as _zenml_peer
    from helpers import zenml_steps as _zenml_steps

    _zenml_steps.ensure_zstream_in_peer(peer.python)
    repo, out = work / "repo", work / "bench.json"
    repo.mkdir(parents=True, exist_ok=True)
    (work / "home").mkdir(exist_ok=True)
    state = work / "state"  # a state dir of its own: no other run's spools to adopt meanwhile
    state.mkdir(mode=0o700)
    (repo / PIPELINE.name).write_text(PIPELINE.read_text())
    env = {**_zenml_peer.client_env(peer, work), "ZSTREAM_STATE_DIR": str(state)}
    extra = fast_extra(peer.python)
    if extra is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra), env.get("PYTHONPATH")]))
    if calls_only:
        env["ZSTREAM_BENCH_CALLS_ONLY"] = "1"
    proc = subprocess.run(
        [peer.python, PIPELINE.name, str(out)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"the benchmark step failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return dict(json.loads(out.read_text()))


def measure(repeat: int = 1, calls_only: bool = False) -> dict[str, Any]:
    """The step's results; over several runs, the best of each."""
    from helpers import zenml_peer as _zenml_peer

    peer = _zenml_peer.ensure_peer()
    runs = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory(prefix="zsz-bench-") as tmp:
            runs.append(run_once(peer, Path(tmp) / str(i), calls_only))
    best = runs[0]
    for r in runs[1:]:
        for k in best["call_ns"]:
            best["call_ns"][k] = min(best["call_ns"][k], r["call_ns"][k])
            best["call_ns_full"][k] = min(best["call_ns_full"][k], r["call_ns_full"][k])
        if not calls_only:
            for k in ("zenml", "zstream_mp"):
                best["events_per_s"][k] = max(best["events_per_s"][k], r["events_per_s"][k])
            best["ceiling"] = max(best["ceiling"], r["ceiling"])
    return best


CALL_TARGETS = [
    # (key, queue, what, target)
    ("call_ns", "free", "zstream_mp", 0.5),
    ("call_ns_full", "full", "zstream_mp", 0.5),
    ("call_ns", "free", "zstream_mp_fast", 0.25),
    ("call_ns_full", "full", "zstream_mp_fast", 0.25),
]


def rows(best: dict[str, Any]) -> list[dict[str, Any]]:
    """The in-step target rows, each against ZenML's publish() in the same step and state."""
    found = []
    for key, queue, ours, target in CALL_TARGETS:
        extra = "the fast extra" if ours.endswith("_fast") else "no extra"
        value, base = best[key].get(ours), best[key]["zenml"]
        found.append(_row(f"in-step publish(), queue {queue}, {extra}", value, base, target))
    return found


def _row(measure: str, value: float | None, base: float, target: float) -> dict[str, Any]:
    ratio = None if value is None else value / base
    return {
        "measure": measure + ("" if value is not None else " (orjson not importable in the step)"),
        "value": value,
        "unit": "ns/call",
        "baseline": "zenml.streaming.publish, same step",
        "baseline_value": base,
        "ratio": ratio,
        "target": f"<= {target}x",
        "met": ratio is not None and ratio <= target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs; the best of each is shown")
    parser.add_argument(
        "--calls-only", action="store_true", help="the caller's cost only (a shorter run)"
    )
    args = parser.parse_args()
    best = measure(args.repeat, args.calls_only)
    table_rows: list[list[object]] = []
    for key, label in (("call_ns", "queue free"), ("call_ns_full", "queue full")):
        for ours in ("zstream_mp", "zstream_mp_fast"):
            if ours in best[key]:
                value, base = best[key][ours], best[key]["zenml"]
                target = "0.25" if ours.endswith("_fast") else "0.5"
                table_rows.append(
                    [
                        f"ns per publish(), {label}"
                        + (", fast extra" if ours.endswith("_fast") else ""),
                        f"{base:,.0f}",
                        f"{value:,.0f}",
                        f"{value / base:.2f}x ZenML's (target <= {target}x)",
                    ]
                )
    if not args.calls_only:
        rate, lat, ceiling = best["events_per_s"], best["latency_ms"], best["ceiling"]
        table_rows.append(
            [
                "events/s delivered",
                f"{rate['zenml']:,.0f}",
                f"{rate['zstream_mp']:,.0f}",
                f"{rate['zstream_mp'] / rate['zenml']:.2f}x ZenML's; "
                f"{rate['zstream_mp'] / ceiling:.0%} of one client's {ceiling:,.0f}/s "
                "(target >= 95%)",
            ]
        )
        for q in ("p50", "p99"):
            z, o = lat.get("zenml", {}).get(q), lat.get("zstream_mp", {}).get(q)
            if z is not None and o is not None:
                table_rows.append(
                    [
                        f"publish -> SSE {q}, 100/s (ms)",
                        f"{z:.1f}",
                        f"{o:.1f}",
                        f"{o / z:.2f}x ZenML's",
                    ]
                )
    table(
        f"In a real ZenML step on ZenML's server (Python {best['python']}, batch 64)",
        ["", "zenml.streaming", "zstream_mp", "ratio"],
        table_rows,
    )
    if not args.calls_only:
        print(f"\ndrops (zstream_mp): {best['dropped']['zstream_mp']}")


if __name__ == "__main__":
    main()
