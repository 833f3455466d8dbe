"""`zstream-mp stats [--tree PID] [--run RUN] [--json] [--watch [SECS]]`: the registry, read.

No server is needed: the counters are the pages every publishing process on this host
updates in place. One row per process: its state (alive, exited, dead), what it published,
sent, still has queued, spooled, what of its spool an adopter has yet to deliver, and drops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from zstream_mp.cli._common import Formatter


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="per-process publisher counters on this host (no server needed)",
        description="One row per process that published on this host, read from the "
        "counter pages each publisher keeps up to date in the state directory (no server "
        "needed): its state (alive, exited, dead), published, sent, queued, spooled, "
        "spooled but not yet adopted, dropped, and its runs.",
        formatter_class=Formatter,
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--tree", type=int, metavar="PID", help="PID and its descendants")
    scope.add_argument("--run", metavar="RUN", help="every process that published to RUN")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line, one line per process"
    )
    parser.add_argument(
        "--watch",
        nargs="?",
        const=1.0,
        type=float,
        metavar="SECS",
        help="redraw every SECS seconds (default 1) until interrupted",
    )
    parser.set_defaults(func=_run)


def collect(tree: int | None, run: str | None) -> list[Any]:
    from zstream_mp import _recovery

    if tree is not None:
        root = (tree, _recovery.start_of(tree))
        return _recovery.rows(root, None)
    if run is not None:
        return _recovery.rows(None, run)
    return _recovery.process_rows()


def _as_json(rows: list[Any]) -> str:
    """JSON lines, like every `--json` of the CLI: one object per process."""
    out = []
    for row in sorted(rows, key=lambda r: r.pid):
        data = asdict(row)
        data["stats"]["dropped"] = dict(row.stats.dropped)
        out.append(json.dumps(data, separators=(",", ":")))
    return "\n".join(out)


def _table(rows: list[Any]) -> str:
    head = (
        "PID",
        "STATE",
        "PUBLISHED",
        "SENT",
        "QUEUED",
        "SPOOLED",
        "UNADOPTED",
        "DROPPED",
        "RUNS",
    )
    lines = [head]
    for row in sorted(rows, key=lambda r: r.pid):
        s = row.stats
        runs = ",".join(r[:8] for r in row.runs)
        lines.append(
            (
                str(row.pid),
                row.state,
                str(s.published),
                str(s.sent),
                str(s.queued),
                str(s.spooled),
                str(row.spool_pending),
                str(s.dropped_total),
                runs,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


def _run(args: argparse.Namespace) -> int:
    while True:
        rows = collect(args.tree, args.run)
        text = _as_json(rows) if args.json else _table(rows)
        if args.watch and args.json:  # a stream of lines: each refresh's rows, appended
            if text:
                print(text, flush=True)
            time.sleep(args.watch)
            continue
        if args.watch:
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            sys.stdout.flush()
            time.sleep(args.watch)
            continue
        if text:
            print(text)
        return 0
