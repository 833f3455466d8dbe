"""`LogHandler`: a `logging.Handler` that puts records on the stream as `log` events.

Attach it like any handler (`logging.getLogger().addHandler(zstream_mp.LogHandler())`);
each record becomes one event in whatever run the emitting thread is bound to (a ZenML
step, `bind()`, or the context inherited from a parent), through `publish()`, so it
never blocks on I/O and is fork-safe: a handler attached before a fork publishes from the
child into the child's own queue.

It can never feed itself. Records are skipped when they come from

- the library itself (loggers `zstream_mp` and below: its drop and retry warnings),
- the library's own threads (names starting with `_sender.THREAD_PREFIX`: the sender
  and friends, where `httpx` and `httpcore` log every request the sender makes),
- a `publish()` this handler is already making in the same thread (re-entrancy guard),

so a warning about a failed send does not become an event whose send fails again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from zstream_mp._api import publish
from zstream_mp._sender import THREAD_PREFIX
from zstream_mp.errors import PayloadTooLargeError

__all__ = ["LogHandler"]

LIBRARY_LOGGER = "zstream_mp"
MESSAGE_CHARS_MAX = 16_384
"""Longer messages and tracebacks are cut (keeping their ends) to stay well under the limit."""

_local = threading.local()


def _cut(text: str, limit: int = MESSAGE_CHARS_MAX) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} … [{len(text) - limit} characters cut] … {text[-half:]}"


class LogHandler(logging.Handler):
    """Publishes every record it handles as an event of `kind` (default `log`).

    The payload holds `level`, `logger`, `message` (formatted with this handler's
    formatter, if any), `time` (epoch seconds), `pid`, `thread`, `where`
    (`file:line`) and, when the record has one, `exception` (the traceback text).
    `correlation_id` is passed on to every event (for example the task a worker runs).
    """

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        kind: str = "log",
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(level)
        self.kind = kind
        self.correlation_id = correlation_id

    @staticmethod
    def skips(record: logging.LogRecord) -> bool:
        """True for the records that could loop back (see the module docstring)."""
        name = record.name
        if name == LIBRARY_LOGGER or name.startswith(LIBRARY_LOGGER + "."):
            return True
        thread = record.threadName or ""
        return thread.startswith(THREAD_PREFIX) or getattr(_local, "active", False)

    def payload(self, record: logging.LogRecord) -> dict[str, Any]:
        message = self.format(record) if self.formatter is not None else record.getMessage()
        payload: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": _cut(message),
            "time": record.created,
            "pid": record.process,
            "thread": record.threadName,
            "where": f"{record.pathname}:{record.lineno}",
        }
        if record.exc_info and self.formatter is None:
            payload["exception"] = _cut(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text and self.formatter is None:
            payload["exception"] = _cut(record.exc_text)
        return payload

    def emit(self, record: logging.LogRecord) -> None:
        if self.skips(record):
            return
        _local.active = True
        try:
            payload = self.payload(record)
            try:
                publish(payload, kind=self.kind, correlation_id=self.correlation_id)
            except PayloadTooLargeError:  # many wide non-ASCII characters: keep the head
                payload["message"] = _cut(payload["message"], 1024)
                payload.pop("exception", None)
                publish(payload, kind=self.kind, correlation_id=self.correlation_id)
        except Exception:
            self.handleError(record)
        finally:
            _local.active = False
