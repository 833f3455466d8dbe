"""Settings from the environment, read once per process and validated with clear errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from zstream_mp._stream_context import server_url
from zstream_mp._wire import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SERVER,
    ENV_BATCH_SIZE,
    ENV_DURABLE,
    ENV_EXIT_TIMEOUT,
    ENV_IDLE_EXIT,
    ENV_REGISTRY,
    ENV_REQUEST_TIMEOUT,
    ENV_RETRY_DEADLINE,
    ENV_SERVER,
    ENV_SPOOL_MAX_BYTES,
    ENV_TOKEN,
    MAX_BATCH_SIZE,
)
from zstream_mp.errors import ConfigurationError, InvalidContextError

_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Settings:
    batch_size: int = DEFAULT_BATCH_SIZE
    exit_timeout: float = 2.0
    idle_exit: float = 1.0
    retry_deadline: float = 30.0
    request_timeout: float = 10.0
    durable: bool = False
    spool_max_bytes: int = 64 << 20
    registry: bool = True

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            batch_size=_int_env(ENV_BATCH_SIZE, DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE),
            exit_timeout=_float_env(ENV_EXIT_TIMEOUT, 2.0, 0.0, 600.0),
            idle_exit=_float_env(ENV_IDLE_EXIT, 1.0, 0.01, 3600.0),
            retry_deadline=_float_env(ENV_RETRY_DEADLINE, 30.0, 0.0, 86400.0),
            request_timeout=_float_env(ENV_REQUEST_TIMEOUT, 10.0, 0.1, 600.0),
            durable=_bool_env(ENV_DURABLE, False),
            spool_max_bytes=_int_env(ENV_SPOOL_MAX_BYTES, 64 << 20, 1 << 20, 1 << 40),
            registry=_bool_env(ENV_REGISTRY, True),
        )


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _bool_env(name: str, default: bool) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a switch; use 1 or 0")


def _int_env(name: str, default: int, low: int, high: int) -> int:
    return _number_env(name, default, low, high, int, "a whole number")


def _float_env(name: str, default: float, low: float, high: float) -> float:
    return _number_env(name, default, low, high, float, "a number of seconds")


def _number_env(
    name: str, default: _N, low: _N, high: _N, parse: Callable[[str], _N], what: str
) -> _N:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not {what}; use {what} from {low:g} to {high:g}"
        ) from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={value:g} is out of range; use {low:g}..{high:g}")
    return value


def env_server() -> str | None:
    """`ZSTREAM_SERVER` as a base URL; a malformed value is a `ConfigurationError`."""
    raw = os.environ.get(ENV_SERVER)
    if not raw:
        return None
    try:
        return server_url(raw.strip(), source=ENV_SERVER)
    except InvalidContextError as exc:
        raise ConfigurationError(str(exc)) from None


def given_server(server: str | None) -> str | None:
    """The server a caller named, else `ZSTREAM_SERVER`, without trailing slashes."""
    chosen = server or os.environ.get(ENV_SERVER)
    return chosen.rstrip("/") if chosen else None


def server_or_default(server: str | None) -> str:
    """`given_server()`, else the address `zstream-mp serve` listens on by default."""
    return given_server(server) or DEFAULT_SERVER.rstrip("/")


def checked_token(value: str, source: str) -> str:
    """`value` without surrounding whitespace, or a `ConfigurationError` naming `source`.

    A token goes into an HTTP header: a control character, a space or a non-ASCII character
    would make every request fail (and the HTTP library's error would quote the header, the
    token with it). Surrounding whitespace is dropped, so a secret mounted from a file with
    its trailing newline works. The message never contains the value.
    """
    token = value.strip(" \t\r\n")
    if not token:
        raise ConfigurationError(f"{source} is empty (only whitespace); set a token or unset it")
    for position, char in enumerate(token, 1):
        if not (char.isascii() and char.isprintable()) or char == " ":
            what = "a space" if char == " " else f"the character U+{ord(char):04X}"
            raise ConfigurationError(
                f"{source} holds {what} at position {position} of {len(token)}; a bearer "
                "token is one word of printable ASCII (the value is not shown)"
            )
    return token


def env_token(name: str = ENV_TOKEN) -> str | None:
    """`ZSTREAM_TOKEN` checked by `checked_token`; None when unset or empty."""
    raw = os.environ.get(name)
    if not raw:
        return None
    return checked_token(raw, name)


def env_token_for(server: str) -> str | None:
    """`ZSTREAM_TOKEN` when `server` is the one `ZSTREAM_SERVER` names, else None: a
    token goes only to the server it was given for. A malformed variable gives None here
    (`publish()` reports it where the run is resolved)."""
    try:
        from_env = env_server()
        return env_token() if from_env is not None and from_env == server else None
    except ConfigurationError:
        return None
