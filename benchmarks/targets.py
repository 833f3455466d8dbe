"""Every target row of the publisher's cost, measured in one run, printed as ONE table.

measure | value | baseline (name, value) | ratio | target | met. Each ratio is to a
baseline measured in the same run (the same process where one can be):

* outside ZenML (`publish.py`'s `paths` child): `publish()` per payload encoder (the
  stdlib's; orjson's with the `fast` extra), 84 bytes and 65,000 bytes, queue free and full,
  against the floor (compact `json.dumps` + `deque.append` of the same payload), and the
  full queue against the free one;
* inside a real ZenML step (`zenml_step.py`, the ZenML peer): queue free and full, without
  and with the extra, against ZenML's `publish()` in the same step (`--no-zenml` skips it);
* the sender's latency rows, from `sender_latency.py` when that module exists.

Usage: python benchmarks/targets.py [--quick] [--no-zenml] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import server, table, target_row  # noqa: E402

Row = dict[str, Any]

OUTSIDE = [
    # (encoder, size, queue, target ratio to the floor)
    ("stdlib", "84B", "free", 1.1),
    ("stdlib", "84B", "full", 1.1),
    ("orjson", "84B", "free", 0.5),
    ("orjson", "84B", "full", 0.5),
    ("orjson", "64KiB", "free", 0.15),
    ("orjson", "64KiB", "full", 0.15),
]
SIZES = {"84B": "84 B", "64KiB": "65,000 B"}
PATHS = {"stdlib": "stdlib path", "orjson": "fast extra"}


def row(
    measure: str,
    value: float | None,
    unit: str,
    baseline: str,
    baseline_value: float | None,
    target: float,
) -> Row:
    """A row whose target is a ratio at most `target`."""
    ratio = None if value is None or not baseline_value else value / baseline_value
    met = ratio is not None and ratio <= target
    return target_row(measure, value, unit, baseline, baseline_value, f"<= {target}x", met)


def outside_rows(quick: bool) -> list[Row]:
    import publish

    with server() as url:
        got = publish._run_child(sys.executable, "paths", url, "5" if quick else "15")
    rows = []
    for encoder, size, queue, target in OUTSIDE:
        value = got.get(f"{encoder}_{size}_{queue}_ns")
        label = f"outside, {PATHS[encoder]}, {SIZES[size]}, queue {queue}"
        if value is None:
            label += " (orjson not installed)"
        floor = got.get(f"floor_{size}_{encoder}_{queue}_ns")
        rows.append(
            row(label, value, "ns/call", "json.dumps + deque.append, same payload", floor, target)
        )
    for encoder in ("stdlib", "orjson"):
        full, free = got.get(f"{encoder}_84B_full_ns"), got.get(f"{encoder}_84B_free_ns")
        rows.append(
            row(
                f"outside, {PATHS[encoder]}, 84 B, queue full vs queue free",
                full,
                "ns/call",
                "the same publish(), queue free",
                free,
                1.0,
            )
        )
    return rows


def zenml_rows(quick: bool) -> list[Row]:
    import zenml_step

    return zenml_step.rows(zenml_step.measure(1, calls_only=True))


def sender_rows(quick: bool) -> tuple[list[Row], str | None]:
    try:
        module = importlib.import_module("sender_latency")
    except ImportError:
        return [], "benchmarks/sender_latency.py not found: no sender latency rows"
    return list(module.rows(quick)), None


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer bursts: a rougher run")
    parser.add_argument("--no-zenml", action="store_true", help="skip the in-step rows")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    rows = outside_rows(args.quick)
    notes = []
    if args.no_zenml:
        notes.append("in-step rows skipped (--no-zenml)")
    else:
        try:
            rows += zenml_rows(args.quick)
        except Exception as exc:  # no peer here: the rest of the table still stands
            notes.append(f"in-step rows not measured: {exc!s:.300}")
    sender, note = sender_rows(args.quick)
    rows += sender
    if note:
        notes.append(note)
    table(
        "Targets (each ratio to a baseline measured in the same run)",
        ["measure", "value", "baseline", "baseline value", "ratio", "target", "met"],
        [
            [
                r["measure"],
                _fmt(r["value"], r["unit"]),
                r["baseline"],
                _fmt(r["baseline_value"], r["unit"]),
                "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                r["target"],
                "yes" if r["met"] else "NO",
            ]
            for r in rows
        ],
    )
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
