"""`zstream-mp runs create|end|status|list`: the run lifecycle of zstream-mp's own server.

ZenML servers learn about runs from their database; this server has none, so a run can be
created (needed with `serve --strict-runs`) and ended explicitly. Ending appends the `end`
frame: subscribers receive `event: end` and their streams close. The work is done by
`zstream_mp.runs`; this module only parses flags and prints.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from zstream_mp.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    Formatter,
    add_connection_args,
    fail,
    report,
    resolve,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="create, end, inspect or list runs (zstream-mp's server)",
        description="Manage runs on a `zstream-mp serve` server.",
        formatter_class=Formatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="register a run; prints its id",
        description="Register a run on the server and print its id (needed before "
        "publishing with `serve --strict-runs`; harmless otherwise).",
        formatter_class=Formatter,
    )
    create.add_argument(
        "--id", default=None, metavar="UUID", help="use this run id (default: a random UUID)"
    )
    add_connection_args(create)
    end = actions.add_parser(
        "end",
        help="end a run: subscribers get `end` and disconnect",
        description="Append the run's `end` frame: every subscriber receives it and its "
        "stream closes (`tail` exits 0).",
        formatter_class=Formatter,
    )
    end.add_argument("run_id", metavar="RUN_ID", help="the run to end")
    add_connection_args(end)
    status = actions.add_parser(
        "status",
        help="print a run's state as JSON (exit 1 for a run the server does not know)",
        description="Print one JSON object: the run's id, whether it ended, its "
        "subscribers now and its last event id. Exit 1 for a run the server does not know.",
        formatter_class=Formatter,
    )
    status.add_argument("run_id", metavar="RUN_ID", help="the run to inspect")
    add_connection_args(status)
    listing = actions.add_parser(
        "list",
        help="the runs the server knows, oldest first",
        description="Every run the server knows (created, seen or ended), oldest first.",
        formatter_class=Formatter,
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per line, one line per run"
    )
    add_connection_args(listing)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from zstream_mp import runs
    from zstream_mp.errors import SubscribeError

    server, token = resolve(args)
    run_id = getattr(args, "run_id", None) or getattr(args, "id", None)
    try:
        if args.action == "create":
            print(runs.create_run(server, args.id, token=token))
        elif args.action == "end":
            print(f"ended {runs.end_run(server, args.run_id, token=token).id}")
        elif args.action == "status":
            print(json.dumps(asdict(runs.run_status(server, args.run_id, token=token))))
        else:
            _print_list(runs.list_runs(server, token=token), args.json)
    except SubscribeError as exc:
        return report(exc, server, run_id)
    except ValueError as exc:  # a run id that is not a UUID, refused before any request
        return fail(str(exc), EXIT_USAGE)
    return EXIT_OK


def _print_list(found: list[Any], as_json: bool) -> None:
    if as_json:
        for info in found:
            print(json.dumps(asdict(info)))
        return
    print(f"{'run id':<36}  {'state':<6}  {'subscribers':>11}  last event id")
    for info in found:
        state = "ended" if info.ended else "live"
        print(f"{info.id:<36}  {state:<6}  {info.subscribers:>11}  {info.last_event_id or '-'}")
