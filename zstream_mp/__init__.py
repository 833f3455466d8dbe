"""zstream-mp: live event streaming that stays correct when a pipeline fans out.

A drop-in for ``zenml.streaming``'s ``publish()`` and ``flush()`` that speaks the same
wire contract, with one queue, sender thread and HTTP client per process, and exit hooks
that deliver from pool workers, forked children and spawned interpreters alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from zstream_mp._api import flush, publish, stats
from zstream_mp._context import Binding, StreamContext, bind, current_context, unbind
from zstream_mp._stats import PublisherStats
from zstream_mp.errors import (
    ConfigurationError,
    InvalidContextError,
    InvalidEventError,
    PayloadTooLargeError,
    ReservedKindError,
    ZStreamError,
)

if TYPE_CHECKING:
    from zstream_mp.consumer import subscribe

__all__ = [
    "Binding",
    "ConfigurationError",
    "InvalidContextError",
    "InvalidEventError",
    "PayloadTooLargeError",
    "PublisherStats",
    "ReservedKindError",
    "StreamContext",
    "ZStreamError",
    "__version__",
    "bind",
    "current_context",
    "flush",
    "publish",
    "stats",
    "subscribe",
    "unbind",
]


def __getattr__(name: str) -> Any:
    # The consumer pulls in more than a publisher needs; load it on first use.
    if name == "subscribe":
        from zstream_mp.consumer import subscribe

        return subscribe
    raise AttributeError(f"module 'zstream_mp' has no attribute {name!r}")
