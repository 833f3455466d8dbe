"""`zstream-mp serve`: run the wire-compatible streaming server in the foreground."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from zstream_mp._wire import (
    AUTHORIZATION,
    ENV_SERVE_TOKEN,
    ENV_TOKEN,
    EVENTS_PATH,
    STREAM_PATH,
    bearer,
)
from zstream_mp.cli._serve_process import banner

_CLIENT_AUTH = f"clients use {ENV_TOKEN}=<token> or '{AUTHORIZATION}: {bearer('<token>')}'"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a streaming server (ZenML-compatible endpoints)",
        description=f"Serve POST {EVENTS_PATH} and GET {STREAM_PATH}. "
        "Without --token/--tokens-file the server is open (no auth).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8237, help="port; 0 picks a free one")
    parser.add_argument(
        "--broker", default="memory", help="'memory' (default) or redis://host:port/db"
    )
    parser.add_argument("--token", help=f"one read-write bearer token (or {ENV_SERVE_TOKEN})")
    parser.add_argument(
        "--tokens-file",
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
        "--heartbeat", type=float, default=30.0, help="SSE ': ping' interval in seconds"
    )
    parser.add_argument("--max-stream-length", type=int, default=10_000)
    parser.add_argument(
        "--stream-ttl", type=float, default=3600.0, help="seconds after last publish"
    )
    parser.add_argument("--max-subscribers", type=int, default=100, help="per run")
    parser.add_argument(
        "--deployment-id",
        default="zstream-mp",
        help="Redis key segment; equal to a ZenML server's to share its streams",
    )
    parser.add_argument("--max-request-body", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--access-log", action="store_true", help="log requests (paths only)")
    parser.set_defaults(func=_run)


def _auth_help(args: argparse.Namespace, token: str | None, count: int) -> str:
    from zstream_mp.server.auth import mask

    if token:
        return f"auth: bearer token {mask(token)} (read,write); {_CLIENT_AUTH}"
    if count:
        return f"auth: {count} bearer token(s) from {args.tokens_file}; {_CLIENT_AUTH}"
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
        return 1
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
        return 2

    def ready(url: str) -> None:
        print(banner(url), flush=True)
        file_count = len(tokens) - (1 if token else 0)
        print(_auth_help(args, token, file_count), flush=True)
        print(
            f"broker: {_redact(config.broker)}; streaming "
            f"{'DISABLED (501)' if config.disabled else 'enabled'}",
            flush=True,
        )

    try:
        asyncio.run(serve(config, on_ready=ready))
    except OSError as exc:
        print(f"zstream-mp serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # broker probe failed and the like: one line, no traceback
        print(f"zstream-mp serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _redact(url: str) -> str:
    """Hide a password in a broker URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return url
