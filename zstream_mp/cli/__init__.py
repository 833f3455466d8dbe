"""The `zstream-mp` command line: one module per subcommand, heavy imports deferred.

Each subcommand module exposes `register(subparsers)`; it adds its parser and sets
`func` to a callable taking the parsed namespace and returning an exit code. Importing a
subcommand module must stay cheap (no server, Redis or ZenML imports at module level), so
`zstream-mp --help` works with only the publisher installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_SUBCOMMANDS = ("serve", "tail", "runs", "stats", "spool", "demo", "completion")


def build_parser() -> argparse.ArgumentParser:
    from zstream_mp._version import __version__
    from zstream_mp.cli._common import Formatter

    parser = argparse.ArgumentParser(
        prog="zstream-mp",
        description="Live event streaming for pipelines that fan out to other processes.",
        epilog="Exit status: 0 done (tail: the run ended), 1 refused by the server, "
        "2 usage, 3 authentication, 4 server gone, 130 interrupted.",
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"zstream-mp {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"zstream_mp.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from zstream_mp.cli._common import EXIT_INTERRUPTED, EXIT_USAGE, fail
    from zstream_mp.errors import ConfigurationError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigurationError as exc:  # a bad variable or flag: one line, never a traceback
        return fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
