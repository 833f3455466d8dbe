"""zstream-mp: live event streaming that stays correct when a pipeline fans out.

A drop-in for ``zenml.streaming``'s ``publish()`` and ``flush()`` that speaks the same
wire contract, with one queue, sender thread and HTTP client per process, and exit hooks
that deliver from pool workers, forked children and spawned interpreters alike.
"""

from __future__ import annotations

__version__ = "0.1.0"

from zstream_mp._api import flush, publish, stats
from zstream_mp._context import Binding, StreamContext, bind, current_context, unbind
from zstream_mp._stats import PublisherStats
from zstream_mp.consumer import (
    AuthenticationError,
    Event,
    Gap,
    PermissionDeniedError,
    RunNotFoundError,
    ServerUnavailableError,
    StreamingDisabledError,
    SubscribeError,
    subscribe,
)
from zstream_mp.errors import (
    ConfigurationError,
    InvalidContextError,
    InvalidEventError,
    PayloadTooLargeError,
    ReservedKindError,
    ZStreamError,
)

__all__ = [
    "AuthenticationError",
    "Binding",
    "ConfigurationError",
    "Event",
    "Gap",
    "InvalidContextError",
    "InvalidEventError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PublisherStats",
    "ReservedKindError",
    "RunNotFoundError",
    "ServerUnavailableError",
    "StreamContext",
    "StreamingDisabledError",
    "SubscribeError",
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

