"""`zstream-mp demo`: fan a step-like workload out and watch it live over SSE."""

from __future__ import annotations

import argparse
from typing import Any

from zstream_mp.cli._common import EXIT_USAGE, Formatter, fail


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a fan-out workload against an embedded server and watch it live",
        description="Starts a server on a free loopback port, fans a workload out over a "
        "multiprocessing Pool and joblib, draws a progress bar per worker from "
        "the SSE stream (with rich on a terminal), and ends with a per-process tally.",
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--pool-workers", type=int, default=4, metavar="N", help="multiprocessing.Pool workers"
    )
    parser.add_argument(
        "--joblib-workers",
        type=int,
        default=2,
        metavar="N",
        help="joblib tasks (loky) after the pool; skipped without joblib",
    )
    parser.add_argument(
        "--tokens", type=int, default=120, metavar="N", help="token events per worker"
    )
    parser.add_argument(
        "--delay", type=float, default=0.01, metavar="S", help="seconds between a worker's tokens"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the server (and the run's live page) up after the demo, until Ctrl-C",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="summary lines instead of live bars, even on a terminal",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        return fail("the demo runs the server: pip install 'zstream-mp[demo]'")
    from zstream_mp.cli import _demo_workload as demo

    for name in ("pool_workers", "joblib_workers", "tokens"):
        if getattr(args, name) < 1:
            return fail(f"--{name.replace('_', '-')} must be at least 1", EXIT_USAGE)
    return demo.run(
        pool_workers=args.pool_workers,
        joblib_workers=args.joblib_workers,
        tokens=args.tokens,
        delay=max(0.0, args.delay),
        plain=True if args.plain else None,
        keep=args.keep,
    )
