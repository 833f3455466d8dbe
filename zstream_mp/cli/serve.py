"""`zstream-mp serve`: run the wire-compatible streaming server in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from zstream_mp._wire import DEFAULT_PORT, ENV_SERVE_TOKEN, EVENTS_PATH, RUNS_PATH, STREAM_PATH
from zstream_mp.cli._common import EXIT_REFUSED, EXIT_USAGE, Formatter

_FIRST_LINE = "zstream-mp serving on {url}"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a streaming server (ZenML-compatible endpoints) with a live page",
        description=f"Serve POST {EVENTS_PATH} and GET {STREAM_PATH} as ZenML does, the "
        f"run API under {RUNS_PATH} and a live page at / . Without --token/--tokens-file "
        "the server is open (no auth).",
        formatter_class=Formatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--broker",
        default="memory",
        metavar="URL",
        help="'memory' or redis://host:port/db (needs the redis extra)",
    )
    parser.add_argument(
        "--token", help=f"one read-write bearer token (default: ${ENV_SERVE_TOKEN}; none: open)"
    )
    parser.add_argument(
        "--tokens-file",
        metavar="FILE",
        help="file with one 'TOKEN read|write|read,write' per line, '#' comments",
    )
    parser.add_argument(
        "--disabled", action="store_true", help="answer 501 like a ZenML server without streaming"
    )
    parser.add_argument(
        "--strict-runs",
        action="store_true",
        help="404 for runs not created with `zstream-mp runs create` or the API",
    )
    parser.add_argument(
        "--heartbeat", type=float, default=30.0, metavar="S", help="SSE ': ping' interval, seconds"
    )
    parser.add_argument(
        "--max-stream-length",
        type=int,
        default=10_000,
        metavar="N",
        help="events kept per run (older ones are trimmed)",
    )
    parser.add_argument(
        "--stream-ttl",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds a run's stream is kept after its last publish",
    )
    parser.add_argument(
        "--max-subscribers", type=int, default=100, metavar="N", help="SSE subscribers per run"
    )
    parser.add_argument(
        "--deployment-id",
        default="zstream-mp",
        help="Redis key segment; equal to a ZenML server's to share its streams",
    )
    parser.add_argument(
        "--max-request-body",
        type=int,
        default=256 * 1024 * 1024,
        metavar="BYTES",
        help="larger request bodies get a bare 413",
    )
    parser.add_argument("--access-log", action="store_true", help="log requests (paths only)")
    parser.set_defaults(func=_run)


_LOOPBACK = ("127.", "::1", "localhost", "[::1]")


def _is_loopback(host: str) -> bool:
    return host.startswith(_LOOPBACK)


def _auth_help(args: argparse.Namespace, token: str | None, count: int) -> str:
    from zstream_mp.server.auth import mask

    if token:
        return (
            f"auth: bearer token {mask(token)} (read,write); clients use "
            "ZSTREAM_TOKEN=<token> or 'Authorization: Bearer <token>'"
        )
    if count:
        return (
            f"auth: {count} bearer token(s) from {args.tokens_file}; clients use "
            "ZSTREAM_TOKEN=<token> or 'Authorization: Bearer <token>'"
        )
    return "auth: none (open server); pass --token or --tokens-file to require bearer tokens"


def _run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401

        from zstream_mp.server.auth import load_tokens_file
        from zstream_mp.server.config import ServerConfig
    except ImportError as exc:
        print(
            f"zstream-mp serve needs the server extra: pip install 'zstream-mp[server]' ({exc})",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    if args.broker.startswith(("redis://", "rediss://", "unix://")) and not _has("redis"):
        print(
            "zstream-mp serve: the Redis broker needs the redis extra: "
            "pip install 'zstream-mp[redis]'",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    import asyncio

    from zstream_mp.server.runner import serve

    token = args.token or os.environ.get(ENV_SERVE_TOKEN) or None
    tokens: dict[str, frozenset[str]] = {}
    try:
        if args.tokens_file:
            tokens.update(load_tokens_file(args.tokens_file))
        if token:
            tokens[token] = frozenset({"read", "write"})
        config = ServerConfig(
            host=args.host,
            port=args.port,
            broker=args.broker,
            tokens=tokens,
            disabled=args.disabled,
            strict_runs=args.strict_runs,
            heartbeat=args.heartbeat,
            max_subscribers=args.max_subscribers,
            max_stream_length=args.max_stream_length,
            stream_ttl=args.stream_ttl,
            deployment_id=args.deployment_id,
            max_request_body=args.max_request_body,
            access_log=args.access_log,
        )
    except (OSError, ValueError) as exc:
        print(f"zstream-mp serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not tokens and not _is_loopback(args.host):
        print(
            f"zstream-mp serve: warning: listening on {args.host} with no token: anyone who "
            "can reach this port can read and publish every run; pass --token or --tokens-file",
            file=sys.stderr,
            flush=True,
        )

    def ready(url: str) -> None:
        print(_FIRST_LINE.format(url=url), flush=True)
        file_count = len(tokens) - (1 if token else 0)
        print(_auth_help(args, token, file_count), flush=True)
        print(
            f"broker: {_redact(config.broker)}; streaming "
            f"{'DISABLED (501)' if config.disabled else 'enabled'}",
            flush=True,
        )
        print(f"live page: {url}/ (runs), {url}/runs/RUN_ID (one run)", flush=True)

    try:
        asyncio.run(serve(config, on_ready=ready))
    except OSError as exc:
        print(f"zstream-mp serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # broker probe failed and the like: one line, no traceback
        print(f"zstream-mp serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _redact(url: str) -> str:
    """Hide a password in a broker URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return url
