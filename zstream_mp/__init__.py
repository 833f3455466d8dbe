"""zstream-mp: live event streaming that stays correct when a pipeline fans out.

A drop-in for `zenml.streaming`'s `publish()` and `flush()` that speaks the same
wire contract, with one queue, sender thread and HTTP client per process, and exit hooks
that deliver from pool workers, forked children and spawned interpreters alike.
"""

from __future__ import annotations

from zstream_mp import _api, _zenml
from zstream_mp._aio import aflush, asubscribe
from zstream_mp._api import flush, flush_tree, publish, stats
from zstream_mp._context import Binding, bind, current_context, unbind
from zstream_mp._stats import ProcessRow, PublisherStats, TreeStats
from zstream_mp._stream_context import StreamContext
from zstream_mp._version import __version__
from zstream_mp.consumer import Event, Gap, subscribe
from zstream_mp.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidContextError,
    InvalidEventError,
    InvalidRequestError,
    MissingExtraError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ReservedKindError,
    RunNotFoundError,
    ServerUnavailableError,
    StreamingDisabledError,
    SubscribeError,
    ZStreamError,
)
from zstream_mp.logs import LogHandler

# Hand a ZenML step's context to its children from the step's start, and deliver what the
# step left before ZenML ends its run.
_zenml.watch(on_step_end=_api.step_ended)

__all__ = [
    "AuthenticationError",
    "Binding",
    "ConfigurationError",
    "Event",
    "Gap",
    "InvalidContextError",
    "InvalidEventError",
    "InvalidRequestError",
    "LogHandler",
    "MissingExtraError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProcessRow",
    "PublisherStats",
    "ReservedKindError",
    "RunNotFoundError",
    "ServerUnavailableError",
    "StreamContext",
    "StreamingDisabledError",
    "SubscribeError",
    "TreeStats",
    "ZStreamError",
    "__version__",
    "aflush",
    "asubscribe",
    "bind",
    "current_context",
    "flush",
    "flush_tree",
    "publish",
    "stats",
    "subscribe",
    "unbind",
]
