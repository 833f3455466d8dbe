"""Settings from the environment, read once per process and validated with clear errors."""

from __future__ import annotations

import os
from dataclasses import dataclass

from zstream_mp.errors import ConfigurationError

QUEUE_MAXSIZE = 4096
"""Events one process may hold before the oldest is dropped (as ZenML's publisher)."""
BATCH_SIZE_ENV = "ZENML_STREAM_PUBLISHER_BATCH_SIZE"
MAX_BATCH_SIZE = 1000
"""The server refuses larger batches with 422."""


@dataclass(frozen=True)
class Settings:
    batch_size: int = 64
    exit_timeout: float = 2.0
    idle_exit: float = 1.0
    retry_deadline: float = 30.0
    request_timeout: float = 10.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            batch_size=_int_env(BATCH_SIZE_ENV, 64, 1, MAX_BATCH_SIZE),
            exit_timeout=_float_env("ZSTREAM_EXIT_TIMEOUT", 2.0, 0.0, 600.0),
            idle_exit=_float_env("ZSTREAM_IDLE_EXIT", 1.0, 0.01, 3600.0),
            retry_deadline=_float_env("ZSTREAM_RETRY_DEADLINE", 30.0, 0.0, 86400.0),
            request_timeout=_float_env("ZSTREAM_REQUEST_TIMEOUT", 10.0, 0.1, 600.0),
        )


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _int_env(name: str, default: int, low: int, high: int) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not an integer; use a whole number from {low} to {high}"
        ) from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={value} is out of range; use {low}..{high}")
    return value


def _float_env(name: str, default: float, low: float, high: float) -> float:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a number; use seconds from {low:g} to {high:g}"
        ) from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={value:g} is out of range; use {low:g}..{high:g}")
    return value
