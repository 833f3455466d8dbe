"""`zstream-mp runs create|end|status`: the run lifecycle of zstream-mp's own server.

ZenML servers learn about runs from their database; this server has none, so a run can be
created (needed with `serve --strict-runs`) and ended explicitly. Ending appends the `end`
frame: subscribers receive `event: end` and their streams close.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from zstream_mp._wire import AUTHORIZATION, bearer, run_end_url, run_url, runs_url
from zstream_mp.cli.tail import add_connection_args, fail, resolve


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("runs", help="create, end or inspect a run (zstream-mp server)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="register a run; prints its id")
    create.add_argument("--id", default=None, help="use this UUID instead of a random one")
    add_connection_args(create)
    end = actions.add_parser("end", help="end a run: subscribers get `end` and disconnect")
    end.add_argument("run_id", metavar="RUN_ID")
    add_connection_args(end)
    status = actions.add_parser("status", help="print a run's state as JSON")
    status.add_argument("run_id", metavar="RUN_ID")
    add_connection_args(status)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import httpx

    target = resolve(args)
    if target is None:
        return 1
    server, token = target
    headers = {AUTHORIZATION: bearer(token)} if token else {}
    try:
        if args.action == "create":
            body = {"id": args.id} if args.id else {}
            response = httpx.post(runs_url(server), json=body, headers=headers, timeout=30)
        elif args.action == "end":
            response = httpx.post(run_end_url(server, args.run_id), headers=headers, timeout=30)
        else:
            response = httpx.get(run_url(server, args.run_id), headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        return fail(f"cannot reach {server}: {type(exc).__name__}: {exc}")
    if response.status_code >= 300:
        return fail(f"server answered {response.status_code}: {response.text[:300]}")
    data = response.json()
    if args.action == "create":
        print(data["id"])
    elif args.action == "end":
        print(f"ended {data['id']}")
    else:
        print(json.dumps(data))
    return 0
