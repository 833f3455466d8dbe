"""What the subcommands share: exit codes, --server/--token, and one way to report errors.

Exit codes (README, "Exit codes"): 0 done (for `tail`: the run ended), 1 the server
refused (unknown run, bad request, streaming disabled), 2 usage (bad flags), 3 auth (401
or 403), 4 the server is gone (unreachable, or went away before the run ended), 130
interrupted. An error is one line on stderr, `zstream-mp: <what>` and, where there is
one, `  hint: <what to try>`: never a traceback, raw JSON or a server's source path.
"""

from __future__ import annotations

import argparse
import re
import sys

from zstream_mp._settings import env_token, server_or_default
from zstream_mp._wire import DEFAULT_SERVER, ENV_SERVER, ENV_TOKEN, describe_detail
from zstream_mp.cli._port_hint import zenml_version
from zstream_mp.errors import (
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    RunNotFoundError,
    ServerUnavailableError,
    StreamingDisabledError,
    SubscribeError,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_SERVER_GONE = 4
EXIT_INTERRUPTED = 130

_MAX_DETAIL = 240
_SOURCE_LINE = re.compile(r'^\s*(File "|(GET|POST|PUT|DELETE|HEAD) /)')
_PYDANTIC_ERROR = re.compile(r"'loc': \(([^)]*)\), 'msg': '([^']*)'")


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default in `--help` (options without one say nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """--server/--token with ZSTREAM_SERVER/ZSTREAM_TOKEN fallbacks (tail and runs)."""
    parser.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help=f"server base URL (default: ${ENV_SERVER}, else {DEFAULT_SERVER}, "
        "where `zstream-mp serve` listens by default)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token (default: ${ENV_TOKEN}; none for an open server)",
    )


def resolve(args: argparse.Namespace) -> tuple[str, str | None]:
    """(server, token) from the flags, else the environment, else the default server."""
    return server_or_default(args.server), args.token or env_token()


def fail(message: str, code: int = EXIT_REFUSED, hint: str | None = None) -> int:
    """Report one failure on stderr and return its exit code."""
    text = f"zstream-mp: {message}"
    if hint:
        text += f"\n  hint: {hint}"
    print(text, file=sys.stderr)
    return code


def _clean(detail: object) -> str:
    """A server's `detail` as one short line: validation messages, no paths, no JSON."""
    if isinstance(detail, list) and len(detail) == 2 and all(isinstance(d, str) for d in detail):
        found = _PYDANTIC_ERROR.findall(detail[1])
        if found:
            return "; ".join(
                f"{loc.replace(chr(39), '').split(', ')[-1]}: {msg}" for loc, msg in found
            )
    if isinstance(detail, dict | list) and not (
        isinstance(detail, list) and all(isinstance(d, str) for d in detail)
    ):
        return "the server gave no readable reason"
    text = describe_detail(detail)
    lines = [line.strip() for line in text.splitlines() if not _SOURCE_LINE.match(line)]
    text = " ".join(line for line in lines if line)
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 1].rsplit(" ", 1)[0] + "…"
    return text


def report(exc: SubscribeError, server: str, run_id: str | None = None) -> int:
    """Print `exc` the one way the CLI reports a server error; returns its exit code."""
    status = f"{exc.status} " if exc.status else ""
    reason = _clean(exc.detail) if exc.detail is not None else str(exc)
    if isinstance(exc, AuthenticationError):
        zenml = zenml_version(server)
        return fail(
            f"{server} refused the request ({status}{reason})",
            EXIT_AUTH,
            f"this is a ZenML {zenml} server: pass a ZenML API token with --token or {ENV_TOKEN}"
            if zenml
            else f"pass --token TOKEN or set {ENV_TOKEN} (a token `zstream-mp serve` was given)",
        )
    if isinstance(exc, PermissionDeniedError):
        return fail(
            f"{server} refused the request ({status.strip()}: {reason})",
            EXIT_AUTH,
            "this token lacks the right; reading needs 'read', creating and ending runs 'write'",
        )
    if isinstance(exc, RunNotFoundError):
        what = f"run {run_id}" if run_id else "the run"
        return fail(
            f"{what} not found on {server}",
            EXIT_REFUSED,
            "`zstream-mp runs list` shows the runs this server knows",
        )
    if isinstance(exc, StreamingDisabledError):
        return fail(f"live event streaming is not enabled on {server}", EXIT_REFUSED)
    if isinstance(exc, InvalidRequestError):
        return fail(
            f"{server} refused the request ({status.strip()}: {reason})",
            EXIT_REFUSED,
            "a run id is a UUID; --since takes an event id printed by `tail`",
        )
    if isinstance(exc, ServerUnavailableError):
        return fail(
            _unavailable_text(exc, server),
            EXIT_SERVER_GONE,
            f"is `zstream-mp serve` running there? (--server URL or ${ENV_SERVER})",
        )
    return fail(f"{server} answered {status.strip() or 'an error'}: {reason}", EXIT_REFUSED)


def _unavailable_text(exc: ServerUnavailableError, server: str) -> str:
    if exc.status:
        return f"{server} keeps failing ({exc.status}: {_clean(exc.detail)})"
    text = str(exc)
    if "lost" in text or "(re)connect" in text:
        return f"lost the connection to {server} and could not get it back"
    return f"cannot reach {server}"
