"""`zstream-mp spool ls|drain|discard`: the events processes on this host kept for later.

`ls` lists each spool: where its events go, how many are unsettled and why they are still
there. `drain` delivers every spool whose owner is gone, with the credentials each spool
names (or `--token`). `discard` removes spools whose owner is gone, explicitly.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from zstream_mp._wire import ENV_SERVER, ENV_TOKEN
from zstream_mp.cli._common import EXIT_AUTH, EXIT_OK, EXIT_REFUSED, Formatter, fail

DRAIN_HELP = f"""\
Deliver the spools of processes that are gone, oldest event first, exactly once.

Each spool is sent with the credentials it names (the token its process had for that
server); --token replaces them, for the spools of --server (every spool without it).
Exit status: 0 all delivered, 1 some left (server down: run it again later),
3 refused with 401/403 (give the right token with --token or {ENV_TOKEN}).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "spool",
        help="list, deliver or discard the events kept on this host for later",
        description=__doc__,
        formatter_class=Formatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "ls",
        help="list spools: server, run, unsettled events, why they are still there",
        description="List every spool on this host with its server, run, unsettled "
        "events and the reason they are still there.",
        formatter_class=Formatter,
    )
    ls.add_argument(
        "--json", action="store_true", help="one JSON object per line, one line per spool"
    )
    drain = actions.add_parser(
        "drain",
        help="deliver the spools of processes that are gone",
        description=DRAIN_HELP,
        formatter_class=Formatter,
    )
    drain.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to keep delivering (exit 1 when it could not deliver them all)",
    )
    drain.add_argument("--token", default=None, help="token to send instead of the spools' own")
    drain.add_argument(
        "--server", default=None, metavar="URL", help="only the spools of this server"
    )
    discard = actions.add_parser(
        "discard",
        help="remove the spools of processes that are gone (their events are lost)",
        description="Remove spools whose owner is gone; their unsettled events are lost.",
        formatter_class=Formatter,
    )
    discard.add_argument(
        "--older-than",
        type=float,
        default=0.0,
        metavar="S",
        help="only spools untouched for at least this many seconds",
    )
    discard.add_argument(
        "--server", default=None, metavar="URL", help="only the spools of this server"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.action == "ls":
        return _ls(args.json)
    if args.action == "drain":
        return _drain(args.timeout, args.token, args.server)
    return _discard(args.older_than, args.server)


def _ls(as_json: bool) -> int:
    from zstream_mp import _recovery

    rows = [row.as_dict() for row in _recovery.spools()]
    if as_json:  # JSON lines, like every --json of the CLI
        for row in rows:
            print(json.dumps(row, separators=(",", ":")))
        return EXIT_OK
    if not rows:
        print("no spools")
    for row in rows:
        where = ", ".join(f"{d['server']} run {d['run_id']}" for d in row["destinations"])
        print(f"{row['unsettled']:>8}  {row['reason']:<40}  {where}  ({row['path']})")
    return EXIT_OK


def _drain(timeout: float, token: str | None, server: str | None) -> int:
    from zstream_mp import _recovery

    report = _recovery.drain(time.monotonic() + timeout, token=token, server=server)
    left = sum(row.unsettled for row in _recovery.spools() if _matches(row, server))
    print(f"delivered {report.sent} spooled events; {left} left")
    if report.refused is not None:
        return fail(
            f"the server refused the spooled events with HTTP {report.refused}",
            EXIT_AUTH,
            hint=f"give the right token with --token (or {ENV_TOKEN} for {ENV_SERVER})",
        )
    return EXIT_OK if report.complete and not left else EXIT_REFUSED


def _discard(older_than: float, server: str | None) -> int:
    from zstream_mp import _recovery

    now = time.time()
    removed = events = 0
    for row in _recovery.spools():
        if not row.adoptable or not _matches(row, server):
            continue
        try:
            age = now - os.stat(row.path).st_mtime
        except OSError:
            continue
        if age >= older_than and _recovery.discard(row):
            removed += 1
            events += row.unsettled
    print(f"discarded {removed} spools ({events} unsettled events)")
    return EXIT_OK


def _matches(row: Any, server: str | None) -> bool:
    return server is None or any(d["server"] == server.rstrip("/") for d in row.destinations)
