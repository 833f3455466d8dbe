"""The sender's own HTTP requests log nothing.

httpx logs every request at INFO (`HTTP Request: POST … "HTTP/1.1 200 OK"`) and httpcore
traces each step at DEBUG. ZenML captures INFO into a step's logs and ships them with the
run, so a step that streams 5,000 events would carry a line per batch. A filter on those
loggers drops the records emitted while this thread is inside `requests()`; everyone
else's requests log as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
_local = threading.local()


class _DropOwnRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_local, "active", False)


_FILTER = _DropOwnRequests()


def install() -> None:
    """Attach the filter (idempotent; cheap: a no-op when already attached)."""
    for name in LOGGERS:
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


@contextlib.contextmanager
def requests() -> Iterator[None]:
    """Within this block, this thread's httpx/httpcore records are dropped."""
    _local.active = True
    try:
        yield
    finally:
        _local.active = False
