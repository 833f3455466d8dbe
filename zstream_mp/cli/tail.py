"""`zstream-mp tail RUN_ID`: print a run's events live until the run ends."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from zstream_mp._wire import ENV_SERVER, ENV_TOKEN


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """--server/--token with ZSTREAM_SERVER/ZSTREAM_TOKEN fallbacks (shared with `runs`)."""
    parser.add_argument("--server", default=None, help=f"server base URL (default: ${ENV_SERVER})")
    parser.add_argument("--token", default=None, help=f"bearer token (default: ${ENV_TOKEN})")


def resolve(args: argparse.Namespace) -> tuple[str, str | None] | None:
    """(server, token) from flags or environment; None (after a one-line error) if no server."""
    server = args.server or os.environ.get(ENV_SERVER)
    if not server:
        fail(f"no server: pass --server URL or set {ENV_SERVER}")
        return None
    return server.rstrip("/"), args.token or os.environ.get(ENV_TOKEN) or None


def fail(message: str) -> int:
    """One line on stderr, exit status 1: no tracebacks for expected failures."""
    print(f"zstream-mp: {message}", file=sys.stderr)
    return 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="print a run's events live (exits 0 when the run ends)",
        description="Subscribe to a run's SSE stream and print each event. Replays the "
        "history first unless --since is given.",
    )
    parser.add_argument("run_id", metavar="RUN_ID")
    add_connection_args(parser)
    parser.add_argument(
        "--kind", action="append", dest="kinds", metavar="K", help="only this kind (repeatable)"
    )
    parser.add_argument("--step", action="append", dest="step_names", metavar="NAME")
    parser.add_argument("--correlation-id", action="append", dest="correlation_ids", metavar="C")
    parser.add_argument("--since", default=None, metavar="ID", help="resume after this event id")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--no-reconnect", action="store_true", help="exit 1 when the connection drops"
    )
    parser.set_defaults(func=_run)


def _human(event: Any) -> str:
    where = event.step_name or "-"
    corr = event.correlation_id or ""
    if event.index is not None:
        corr = f"{corr}#{event.index}"
    payload = json.dumps(event.payload, ensure_ascii=False, separators=(", ", ": "))
    return f"{event.id:>14}  {event.kind:<12} {where:<16} {corr:<12} {payload}"


def _json(event: Any) -> str:
    return json.dumps(
        {
            "id": event.id,
            "pipeline_run_id": event.pipeline_run_id,
            "step_run_id": event.step_run_id,
            "step_name": event.step_name,
            "kind": event.kind,
            "correlation_id": event.correlation_id,
            "index": event.index,
            "payload": event.payload,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _run(args: argparse.Namespace) -> int:
    from zstream_mp.consumer import Gap, subscribe
    from zstream_mp.errors import SubscribeError

    target = resolve(args)
    if target is None:
        return 1
    server, token = target
    try:
        stream = subscribe(
            server,
            args.run_id,
            token=token,
            kinds=args.kinds,
            step_names=args.step_names,
            correlation_ids=args.correlation_ids,
            since=args.since,
            reconnect=not args.no_reconnect,
        )
        for item in stream:
            if isinstance(item, Gap):
                if args.json:
                    print(json.dumps({"gap": item.reason}), flush=True)
                else:
                    print(f"-- gap: {item.reason} (events may be missing) --", flush=True)
                continue
            print(_json(item) if args.json else _human(item), flush=True)
    except SubscribeError as exc:
        return fail(str(exc))
    return 0
