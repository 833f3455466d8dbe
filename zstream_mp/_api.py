"""``publish()``, ``flush()`` and ``stats()``: the caller's side, cheap and never blocking."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from zstream_mp import _context, _event, _process
from zstream_mp._stats import Counters, PublisherStats
from zstream_mp.errors import PayloadTooLargeError

logger = logging.getLogger("zstream_mp")


def publish(
    payload: dict[str, Any],
    *,
    kind: str = "event",
    correlation_id: str | None = None,
    index: int | None = None,
) -> None:
    """Queue one event for the run this process (or ZenML step) is bound to.

    Never blocks on I/O. Bad arguments raise a typed error here, in the caller's thread,
    and leave what is already queued untouched. Outside any run context the event is
    dropped, counted as ``no_context``, with a debug-level log line.
    """
    kind_bytes = _event.check_kind(kind)
    tail = _event.encode_tail(correlation_id, index)
    try:
        body = _event.encode_payload(payload)
        dest = _context.resolve_destination()
        if dest is None:
            _process.state().count_drop("no_context")
            logger.debug("publish() called outside any run context; event of kind %r dropped", kind)
            return
        event = _event.assemble(dest.prefix, kind_bytes, tail, body)
    except PayloadTooLargeError:  # the payload's 65,536 or the envelope's 69,632 bytes
        _process.state().count_drop("oversize")
        raise
    _process.state().enqueue(dest, event)


def flush(timeout: float | None = 2.0) -> bool:
    """Wait until this process's queued events are sent (or dropped by policy).

    Returns False when ``timeout`` seconds pass first; ``None`` waits as long as it takes.
    Never waits longer than asked, whatever the server does.
    """
    st = _process.existing_state()
    if st is None:
        return True
    if timeout is None:
        deadline = math.inf
    else:
        if timeout < 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        deadline = time.monotonic() + timeout
    if st.flush_until(deadline):
        return True
    pending = st.queue.pending()
    if pending:
        logger.warning(
            "flush() gave up after %gs with %d events still queued%s",
            timeout,
            pending,
            f" (last failure: {st.health.last_failure})" if st.health.last_failure else "",
        )
    return pending == 0


def stats() -> PublisherStats:
    """A snapshot of this process's counters (zeros before its first publish)."""
    st = _process.existing_state()
    if st is None:
        return Counters().snapshot(os.getpid(), 0, False)
    return st.snapshot()
