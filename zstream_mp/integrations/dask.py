"""Dask `distributed`: bind a run in every worker with a WorkerPlugin, flush at close.

Workers of a `LocalCluster` are spawned interpreters, and workers started by the
`dask worker` CLI are no relatives of the client at all, so neither learns the client's
context from the environment. `register(client, ctx)` registers `StreamPlugin`: the
scheduler keeps it (token included, so use TLS to a remote scheduler) and runs its
`setup` in every current and future worker, which binds the run; its `teardown`
flushes within the Nanny's ~4 s before SIGKILL when the worker closes.
`flush_workers(client)` delivers what the current workers queued without closing them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import zstream_mp
from zstream_mp._stream_context import StreamContext
from zstream_mp.errors import InvalidContextError
from zstream_mp.integrations._extras import require

if TYPE_CHECKING:
    from zstream_mp.integrations._dask_plugin import StreamPlugin

__all__ = ["DEFAULT_TEARDOWN_FLUSH", "StreamPlugin", "flush_workers", "plugin", "register"]

DEFAULT_TEARDOWN_FLUSH = 1.5
"""Seconds the plugin's teardown flush takes at most: with the exit hooks' 2 s it stays
inside the Nanny's 4 s before SIGKILL."""


def _plugin_class() -> type[StreamPlugin]:
    require("distributed", "dask")
    from zstream_mp.integrations._dask_plugin import StreamPlugin

    return StreamPlugin


def __getattr__(name: str) -> Any:
    if name == "StreamPlugin":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def plugin(
    ctx: StreamContext | None = None, *, flush_timeout: float = DEFAULT_TEARDOWN_FLUSH
) -> StreamPlugin:
    """A `StreamPlugin` for `ctx` (default: this process's current context)."""
    if flush_timeout < 0 or math.isnan(flush_timeout):
        raise ValueError(f"flush_timeout must be >= 0, got {flush_timeout!r}")
    if ctx is None:
        ctx = zstream_mp.current_context()
        if ctx is None:
            raise InvalidContextError(
                "no run context to hand to Dask workers: pass a StreamContext, call "
                "zstream_mp.bind() first, or call this inside a ZenML step"
            )
    elif not isinstance(ctx, StreamContext):
        kind = type(ctx).__name__  # type: ignore[unreachable]
        raise InvalidContextError(f"ctx must be a zstream_mp.StreamContext, not {kind}")
    return _plugin_class()(ctx, flush_timeout)


def register(
    client: Any,
    ctx: StreamContext | None = None,
    *,
    flush_timeout: float = DEFAULT_TEARDOWN_FLUSH,
) -> StreamPlugin:
    """Register a `StreamPlugin` on `client`'s cluster: every worker publishes to `ctx`."""
    found = plugin(ctx, flush_timeout=flush_timeout)
    client.register_plugin(found)
    return found


def _flush_here(timeout: float) -> bool:
    return zstream_mp.flush(timeout)


def flush_workers(client: Any, timeout: float = 2.0) -> bool:
    """Deliver what every current worker has queued; False if one timed out."""
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")
    results = client.run(_flush_here, timeout)
    return all(bool(ok) for ok in results.values())
