"""`zstream-mp spool ls|drain`: the spools dead processes left on this host.

`ls` lists each spool with its unsettled events and whether it can be adopted now (its
owner, and any claimer, is dead). `drain` adopts and delivers every adoptable spool, with
the credentials each spool names (its token file) or `ZSTREAM_TOKEN`.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from zstream_mp.cli._common import Formatter


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "spool", help="list or deliver the spools of dead processes", formatter_class=Formatter
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "ls", help="list spools: owner, unsettled events, adoptable", formatter_class=Formatter
    )
    ls.add_argument("--json", action="store_true", help="one JSON document")
    drain = actions.add_parser(
        "drain", help="adopt and deliver every adoptable spool", formatter_class=Formatter
    )
    drain.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to keep delivering (exit 1 when it could not deliver them all)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from zstream_mp._recovery import adopt as _adopt
    from zstream_mp._recovery import tree as _tree

    if args.action == "ls":
        rows = [
            {"path": s.path, "owner": s.owner_pid, "unsettled": n, "adoptable": ok}
            for s, n, ok in _tree.spool_rows()
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                state = "adoptable" if row["adoptable"] else "owned"
                print(f"{row['unsettled']:>8}  {state:<9}  pid {row['owner']:<8} {row['path']}")
        return 0
    sent: list[int] = []
    complete = _adopt.adopt_all(time.monotonic() + args.timeout, on_sent=sent.append)
    left = sum(n for _, n, _ in _tree.spool_rows())
    print(f"delivered {sum(sent)} spooled events; {left} left")
    return 0 if complete else 1
