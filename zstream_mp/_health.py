"""What the user learns about delivery while it happens: one line, counters that move.

The transport tells this object about every failed attempt and every delivery. The first
failure towards a server logs one warning at once, naming the server (never a token) and
the reason; while it keeps failing, at most one line every `REPEAT_SECONDS`; when it
recovers, one line says so. Retries are counted as they happen, not when the batch is over,
and the last failure is kept for `stats()` and for the message of a `flush()` that
gives up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from zstream_mp._queue import Queue

logger = logging.getLogger("zstream_mp")

REPEAT_SECONDS = 30.0
"""How often a delivery failure that goes on is logged again."""


@dataclass
class _Failing:
    since: float
    attempts: int
    last_logged: float


class DeliveryHealth:
    """Failure and recovery of delivery, per server, for one process."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._failing: dict[str, _Failing] = {}
        self._said: dict[object, float] = {}
        self.last_failure: str | None = None
        """`"<server>: <reason>"` of the latest failed attempt or dropped batch."""

    def attempt_failed(self, server: str, reason: str, will_retry: bool) -> None:
        now = time.monotonic()
        self.last_failure = f"{server}: {reason}"
        if will_retry:
            self._queue.count("retries")
        state = self._failing.get(server)
        if state is None:
            self._failing[server] = _Failing(now, 1, now)
            logger.warning(
                "delivery to %s is failing (%s); %s",
                server,
                reason,
                "retrying" if will_retry else "giving up on this batch",
            )
            return
        state.attempts += 1
        if now - state.last_logged >= REPEAT_SECONDS:
            state.last_logged = now
            logger.warning(
                "delivery to %s still failing after %d attempts in %.0f s (%s)",
                server,
                state.attempts,
                now - state.since,
                reason,
            )

    def delivered(self, server: str) -> None:
        if not self._failing:
            return
        state = self._failing.pop(server, None)
        if state is not None:
            logger.info(
                "delivery to %s recovered after %d failed attempts in %.1f s",
                server,
                state.attempts,
                time.monotonic() - state.since,
            )

    def dropped(self, key: object, message: str, *args: object) -> None:
        """Log a drop once per `key` at WARNING, then at most every `REPEAT_SECONDS`."""
        now = time.monotonic()
        last = self._said.get(key)
        level = logging.WARNING
        if last is not None and now - last < REPEAT_SECONDS:
            level = logging.DEBUG
        else:
            self._said[key] = now
        logger.log(level, message, *args)
        text = message % args if args else message
        self.last_failure = text
