"""ZenML's publisher and ours inside the same real ZenML step, on ZenML's own server.

Runs ``_zenml_step_pipeline.py`` in the ZenML peer venv (../shared/peers/zenml, started if
needed) on the local orchestrator, with both publishers real and default settings, and prints:

* ns per ``publish()`` call in the caller's thread (target: ours ≤ 0.5x ZenML's);
* events/s delivered without drops, both at batch 64 (target: ≥ ZenML's, and ≥ 95% of one raw
  keep-alive client's ceiling at the same batch size, measured in the same step);
* publish → SSE latency p50 / p99 at 100 events/s (target: ≤ ZenML's).

Usage: python benchmarks/zenml_step.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
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


def run_once(peer: Any, work: Path) -> dict[str, Any]:
    from helpers import zenml_peer as _zenml_peer
    from helpers import zenml_steps as _zenml_steps

    _zenml_steps.ensure_zstream_in_peer(peer.python)
    repo, out = work / "repo", work / "bench.json"
    repo.mkdir(parents=True, exist_ok=True)
    (work / "home").mkdir(exist_ok=True)
    state = work / "state"  # a state dir of its own: no other run's spools to adopt meanwhile
    state.mkdir(mode=0o700)
    (repo / PIPELINE.name).write_text(PIPELINE.read_text())
    proc = subprocess.run(
        [peer.python, PIPELINE.name, str(out)],
        cwd=repo,
        env={**_zenml_peer.client_env(peer, work), "ZSTREAM_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"the benchmark step failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return dict(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs; the best of each is shown")
    args = parser.parse_args()
    from helpers import zenml_peer as _zenml_peer

    peer = _zenml_peer.ensure_peer()
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="zsz-bench-") as tmp:
            runs.append(run_once(peer, Path(tmp) / str(i)))
    best = runs[0]
    for r in runs[1:]:
        for k in ("zenml", "zstream_mp"):
            best["call_ns"][k] = min(best["call_ns"][k], r["call_ns"][k])
            best["events_per_s"][k] = max(best["events_per_s"][k], r["events_per_s"][k])
        best["ceiling"] = max(best["ceiling"], r["ceiling"])
    ns, rate, lat = best["call_ns"], best["events_per_s"], best["latency_ms"]
    ceiling = best["ceiling"]
    rows: list[list[object]] = [
        [
            "ns per publish()",
            f"{ns['zenml']:,.0f}",
            f"{ns['zstream_mp']:,.0f}",
            f"{ns['zstream_mp'] / ns['zenml']:.2f}x ZenML's (target <= 0.5x)",
        ],
        [
            "events/s delivered",
            f"{rate['zenml']:,.0f}",
            f"{rate['zstream_mp']:,.0f}",
            f"{rate['zstream_mp'] / rate['zenml']:.2f}x ZenML's; "
            f"{rate['zstream_mp'] / ceiling:.0%} of one client's {ceiling:,.0f}/s (target >= 95%)",
        ],
    ]
    for q in ("p50", "p99"):
        z, o = lat.get("zenml", {}).get(q), lat.get("zstream_mp", {}).get(q)
        if z is not None and o is not None:
            rows.append(
                [f"publish -> SSE {q}, 100/s (ms)", f"{z:.1f}", f"{o:.1f}", f"{o / z:.2f}x ZenML's"]
            )
    table(
        f"In a real ZenML step on ZenML's server (Python {best['python']}, batch 64)",
        ["", "zenml.streaming", "zstream_mp", "ratio"],
        rows,
    )
    print(f"\ndrops (zstream_mp): {best['dropped']['zstream_mp']}")


if __name__ == "__main__":
    main()
