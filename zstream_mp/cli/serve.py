"""`zstream-mp serve`: run the wire-compatible streaming server in the foreground."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zstream_mp._settings import checked_token, env_token
from zstream_mp._wire import (
    AUTHORIZATION,
    BATCH_BODY_MAX,
    DEFAULT_PORT,
    ENV_SERVE_TOKEN,
    ENV_TOKEN,
    EVENTS_PATH,
    IDEMPOTENCY_KEY,
    RUNS_PATH,
    STREAM_PATH,
    bearer,
)
from zstream_mp.cli._common import EXIT_REFUSED, EXIT_USAGE, Formatter
from zstream_mp.cli._port_hint import listen_failure
from zstream_mp.cli._serve_process import banner
from zstream_mp.errors import ConfigurationError
from zstream_mp.server.config import MAX_CONNECTIONS

_CLIENT_AUTH = f"clients use {ENV_TOKEN}=<token> or '{AUTHORIZATION}: {bearer('<token>')}'"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a streaming server (ZenML-compatible endpoints) with a live page",
        description=f"Serve POST {EVENTS_PATH} and GET {STREAM_PATH} as ZenML does, the "
        f"run API under {RUNS_PATH} and a live page at / . Without --token/--tokens-file "
        "the server is open (no auth).",
        formatter_class=Formatter,
    )
    defaults = _defaults()
    parser.add_argument("--host", default=defaults.host, help="interface to listen on")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--broker",
        default=defaults.broker,
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
        "--heartbeat",
        type=float,
        default=defaults.heartbeat,
        metavar="S",
        help="SSE ': ping' interval, seconds",
    )
    parser.add_argument(
        "--max-stream-length",
        type=int,
        default=defaults.max_stream_length,
        metavar="N",
        help="events kept per run (older ones are trimmed)",
    )
    parser.add_argument(
        "--stream-ttl",
        type=float,
        default=defaults.stream_ttl,
        metavar="S",
        help="seconds a run's stream (and its run record) is kept after its last use",
    )
    parser.add_argument(
        "--max-subscribers",
        type=int,
        default=defaults.max_subscribers,
        metavar="N",
        help="SSE subscribers per run",
    )
    parser.add_argument(
        "--max-subscribers-total",
        type=int,
        default=defaults.max_subscribers_total,
        metavar="N",
        help="SSE subscribers per server process, all runs",
    )
    parser.add_argument(
        "--sse-write-timeout",
        type=float,
        default=defaults.sse_write_timeout,
        metavar="S",
        help="seconds an SSE client may stop reading before it is cut off",
    )
    parser.add_argument(
        "--deployment-id",
        default=defaults.deployment_id,
        help="Redis key segment; equal to a ZenML server's to share its streams",
    )
    parser.add_argument(
        "--max-request-body",
        type=int,
        default=defaults.max_request_body,
        metavar="BYTES",
        help="bytes of one POST body (1,000 events at the envelope limit); larger ones get "
        "a bare 413",
    )
    parser.add_argument(
        "--memory-max-bytes",
        type=int,
        default=defaults.memory_max_bytes,
        metavar="BYTES",
        help="memory broker: frame bytes held over all runs (503 above)",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=defaults.max_runs,
        metavar="N",
        help="runs remembered as created, ended or seen (oldest forgotten)",
    )
    parser.add_argument(
        "--idempotency-keys",
        type=int,
        default=defaults.idempotency_keys,
        metavar="N",
        help=f"{IDEMPOTENCY_KEY} records kept (memory broker; Redis keeps them with a TTL)",
    )
    parser.add_argument(
        "--idempotency-ttl",
        type=float,
        default=defaults.idempotency_ttl,
        metavar="S",
        help=f"seconds an {IDEMPOTENCY_KEY} record is kept",
    )
    parser.add_argument(
        "--max-body-containers",
        type=int,
        default=defaults.max_body_containers,
        metavar="N",
        help="JSON arrays and objects one POST body may hold (bounds a parse's memory and "
        "time); more gets 413",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        metavar="N",
        help="open connections per process (fitted to ulimit -n); beyond it the oldest "
        "connection without a whole request head is dropped",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout,
        metavar="S",
        help="seconds a connection may take to send a request head (or idle between requests)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=defaults.body_timeout,
        metavar="S",
        help="seconds a request body may take to arrive in full (then 408)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        default=[],
        metavar="NAME",
        help="a Host name clients may use besides the loopback names and --host "
        "(repeatable; '*' accepts any); others get 400 (DNS rebinding)",
    )
    parser.add_argument("--access-log", action="store_true", help="log requests (paths only)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the one port (needs --broker redis://...)",
    )
    parser.set_defaults(func=_run)


def _defaults() -> Any:
    """The server's defaults, so --help shows them; plain values when the extra is missing."""
    try:
        from zstream_mp.server.config import ServerConfig
    except ImportError:
        return argparse.Namespace(
            host="127.0.0.1",
            port=DEFAULT_PORT,
            broker="memory",
            heartbeat=30.0,
            max_stream_length=10_000,
            stream_ttl=3600.0,
            max_subscribers=100,
            max_subscribers_total=10_000,
            sse_write_timeout=30.0,
            deployment_id="zstream-mp",
            max_request_body=BATCH_BODY_MAX,
            memory_max_bytes=256 * 1024 * 1024,
            max_runs=100_000,
            idempotency_keys=100_000,
            idempotency_ttl=3600.0,
            max_body_containers=250_000,
            max_connections=MAX_CONNECTIONS,
            header_timeout=10.0,
            body_timeout=60.0,
        )
    return ServerConfig()


_LOOPBACK = ("127.", "::1", "localhost", "[::1]")


def _is_loopback(host: str) -> bool:
    return host.startswith(_LOOPBACK)


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
        return EXIT_REFUSED
    if args.broker.startswith(("redis://", "rediss://", "unix://")) and not _has("redis"):
        print(
            "zstream-mp serve: the Redis broker needs the redis extra: "
            "pip install 'zstream-mp[redis]'",
            file=sys.stderr,
        )
        return EXIT_REFUSED

    from zstream_mp.server.config import redact_url
    from zstream_mp.server.runner import serve_in_own_process

    tokens: dict[str, frozenset[str]] = {}
    try:
        token = checked_token(args.token, "--token") if args.token else env_token(ENV_SERVE_TOKEN)
        if args.tokens_file:
            tokens.update(load_tokens_file(args.tokens_file))
        if token:
            tokens[token] = tokens.get(token, frozenset()) | {"read", "write"}
        config = ServerConfig(
            host=args.host,
            port=args.port,
            broker=args.broker,
            tokens=tokens,
            disabled=args.disabled,
            strict_runs=args.strict_runs,
            heartbeat=args.heartbeat,
            max_subscribers=args.max_subscribers,
            max_subscribers_total=args.max_subscribers_total,
            sse_write_timeout=args.sse_write_timeout,
            max_stream_length=args.max_stream_length,
            stream_ttl=args.stream_ttl,
            deployment_id=args.deployment_id,
            access_log=args.access_log,
            memory_max_bytes=args.memory_max_bytes,
            max_runs=args.max_runs,
            idempotency_keys=args.idempotency_keys,
            idempotency_ttl=args.idempotency_ttl,
            max_body_containers=args.max_body_containers,
            max_connections=args.max_connections,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            allowed_hosts=tuple(args.allowed_hosts),
            tokens_file=args.tokens_file,
            flag_tokens={token: frozenset({"read", "write"})} if token else {},
            **({"max_request_body": args.max_request_body} if args.max_request_body else {}),
        )
    except (OSError, ValueError, ConfigurationError) as exc:
        print(f"zstream-mp serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not tokens and not _is_loopback(args.host):
        print(
            f"zstream-mp serve: warning: listening on {args.host} with no token: anyone who "
            "can reach this port can read and publish every run; pass --token or --tokens-file",
            file=sys.stderr,
            flush=True,
        )
    if args.host.strip("[]") in ("0.0.0.0", "::", "") and not args.allowed_hosts:
        print(
            f"zstream-mp serve: note: listening on {args.host}: requests must name this "
            "server by a loopback name (Host header) unless you add the names clients use "
            "with --allowed-host NAME (or '*'); others get 400",
            file=sys.stderr,
            flush=True,
        )

    def ready(url: str) -> None:
        print(banner(url), flush=True)
        file_count = len(tokens) - (1 if token else 0)
        print(_auth_help(args, token, file_count), flush=True)
        print(
            f"broker: {redact_url(config.broker)}; streaming "
            f"{'DISABLED (501)' if config.disabled else 'enabled'}",
            flush=True,
        )
        print(f"live page: {url}/ (runs), {url}/runs/RUN_ID (one run)", flush=True)
        print(_limits_line(config), flush=True)

    if args.workers != 1:
        return _run_workers(config, args.workers, ready)
    try:
        serve_in_own_process(config, on_ready=ready)
    except OSError as exc:
        print(listen_failure(args.host, args.port, exc), file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # broker probe failed and the like: one line, no traceback
        print(f"zstream-mp serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def _limits_line(config: Any) -> str:
    """The connection limits and accepted names, printed once at start (not per accept)."""
    from zstream_mp.server.origins import HostPolicy

    policy = HostPolicy(config.host, config.allowed_hosts)
    hosts = "any (--allowed-host '*')" if policy.any else ", ".join(sorted(policy.names))
    reload_note = "; SIGHUP reloads the tokens file" if config.tokens_file else ""
    return (
        f"limits: {config.max_connections} connections per process, request head "
        f"{config.header_timeout:g} s, body {config.body_timeout:g} s; Host names: "
        f"{hosts}{reload_note}"
    )


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _run_workers(config: Any, workers: int, ready: Any) -> int:
    """`--workers N`: N processes on one socket (zstream_mp.server.workers)."""
    from zstream_mp.server.workers import check_workers, serve_workers

    try:
        check_workers(config, workers)
    except ValueError as exc:
        print(f"zstream-mp serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return serve_workers(config, workers, on_ready=ready)
    except OSError as exc:
        print(listen_failure(config.host, config.port, exc), file=sys.stderr)
        return 1
    except Exception as exc:  # broker probe failed and the like: one line, no traceback
        print(f"zstream-mp serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
