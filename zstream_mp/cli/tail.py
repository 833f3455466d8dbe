"""`zstream-mp tail RUN_ID`: print a run's events live until the run ends.

Exit status 0 means the run ended. A server that shuts down first sends `gap: shutdown`
then `end`; that is not the run's end, so `tail` exits 4 (server gone), as it does when
the connection is lost and cannot be re-established within `--retry-for` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

from zstream_mp._settings import checked_token
from zstream_mp._wire import ENV_TOKEN
from zstream_mp.cli._common import (
    EXIT_OK,
    EXIT_SERVER_GONE,
    EXIT_USAGE,
    Formatter,
    add_connection_args,
    fail,
    report,
    resolve,
)
from zstream_mp.cli._printable import printable
from zstream_mp.errors import ConfigurationError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="print a run's events live (exit 0 when the run ends, 4 when the server goes away)",
        description="Subscribe to a run's SSE stream and print each event. Replays the "
        "history first unless --since is given, then waits for new events (saying so on "
        "stderr when the run has none yet). Exit status: 0 the run ended, 1 refused "
        "(e.g. a run unknown to a ZenML server or to `serve --strict-runs`), 2 usage, "
        "3 auth, 4 server gone.",
        formatter_class=Formatter,
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the run to follow (a UUID)")
    add_connection_args(parser)
    parser.add_argument(
        "--kind",
        action="append",
        dest="kinds",
        metavar="K",
        help="only events of this kind (repeatable; default: every kind)",
    )
    parser.add_argument(
        "--step",
        action="append",
        dest="step_names",
        metavar="NAME",
        help="only events of this step (repeatable; default: every step)",
    )
    parser.add_argument(
        "--correlation-id",
        action="append",
        dest="correlation_ids",
        metavar="C",
        help="only events with this correlation id (repeatable; default: all)",
    )
    parser.add_argument(
        "--since",
        default=None,
        metavar="ID",
        help="resume after this event id (default: replay all)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: per event, and {"gap": REASON} per gap',
    )
    output.add_argument(
        "--live",
        action="store_true",
        help="a live view per worker (progress, events/s, drops) instead of one line per "
        "event; bars need a terminal and the tui extra, else a summary line each second",
    )
    parser.add_argument(
        "--no-reconnect", action="store_true", help="exit 4 as soon as the connection drops"
    )
    parser.add_argument(
        "--retry-for",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to keep trying to reconnect before exiting 4",
    )
    parser.set_defaults(func=_run)


def _human(event: Any) -> str:
    """One line per event; every field is the publisher's, so all of it goes through
    `printable` (no escape sequence reaches the terminal)."""
    where = event.step_name or "-"
    corr = event.correlation_id or ""
    if event.index is not None:
        corr = f"{corr}#{event.index}"
    payload = json.dumps(event.payload, ensure_ascii=False, separators=(", ", ": "))
    return printable(f"{event.id:>14}  {event.kind:<12} {where:<16} {corr:<12} {payload}")


def _json(event: Any) -> str:
    """One JSON object per line; characters a terminal would act on are `\\u` escapes."""
    return printable(_json_text(event))


def _json_text(event: Any) -> str:
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


def _print_lines(stream: Any, as_json: bool) -> bool:
    """Print every item; True when the stream ended because the server shut down."""
    from zstream_mp.consumer import Gap

    shutdown = False
    for item in stream:
        if isinstance(item, Gap):
            shutdown = item.reason == "shutdown"
            if as_json:
                print(printable(json.dumps({"gap": item.reason})), flush=True)
            else:
                print(f"-- gap: {printable(item.reason)} (events may be missing) --", flush=True)
            continue
        shutdown = False
        print(_json(item) if as_json else _human(item), flush=True)
    return shutdown


def _live(stream: Any, run_id: str) -> bool:
    from zstream_mp.cli._dashboard import Dashboard, Tally
    from zstream_mp.consumer import Gap

    tally = Tally()
    shutdown = False
    with Dashboard(tally, sys.stdout, f"run {run_id}"):
        for item in stream:
            shutdown = isinstance(item, Gap) and item.reason == "shutdown"
            tally.add(item)
        tally.state = "server shut down" if shutdown else "run ended"
    return shutdown


WAITING_AFTER = 0.8
"""Seconds without a first event before `tail` says it is waiting (a run's history, when
it has one, arrives well within this)."""


def _say_when_waiting(stream: Iterator[Any], run_id: str, server: str) -> Iterator[Any]:
    """Pass `stream` through; if nothing has come after `WAITING_AFTER` s, say so once.

    A server accepts a subscription to a run nobody has published to yet and then stays
    silent; without this line, `tail` on a mistyped run id would look hung. Said only
    when the server answers its health check: an unreachable one gets its own error.
    """
    first = threading.Event()

    def waiting() -> None:
        if not first.wait(WAITING_AFTER) and _answers(server) and not first.is_set():
            print(
                f"zstream-mp: waiting for run {run_id} on {server}: no event yet "
                "(nobody has published to it); Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )

    threading.Thread(target=waiting, name="zstream-tail-waiting", daemon=True).start()
    try:
        for item in stream:
            first.set()
            yield item
    finally:
        first.set()


def _answers(server: str) -> bool:
    import httpx

    from zstream_mp._wire import HEALTH_PATH

    try:
        return httpx.get(server + HEALTH_PATH, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _run(args: argparse.Namespace) -> int:
    from zstream_mp.consumer import subscribe
    from zstream_mp.errors import SubscribeError

    server, token = resolve(args)
    try:
        token = checked_token(token, "--token" if args.token else ENV_TOKEN) if token else None
    except ConfigurationError as exc:  # names the source, never the value
        return fail(str(exc), EXIT_USAGE)
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
            retry_for=args.retry_for,
        )
        stream = _say_when_waiting(stream, args.run_id, server)
        shutdown = _live(stream, args.run_id) if args.live else _print_lines(stream, args.json)
    except SubscribeError as exc:
        return report(exc, server, args.run_id)
    if shutdown:
        return fail(
            f"{server} shut down before run {args.run_id} ended",
            EXIT_SERVER_GONE,
            f"resume where this stopped with --since (events are kept by the broker); "
            f"`zstream-mp runs status {args.run_id}` says whether the run has ended",
        )
    return EXIT_OK
