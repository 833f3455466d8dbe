"""The `distributed` WorkerPlugin itself; imported only once `distributed` is in use.

Kept apart from `dask.py` because it subclasses `WorkerPlugin` at import. Workers
unpickle the plugin by this module's name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

import zstream_mp
from zstream_mp._stream_context import StreamContext


class StreamPlugin(WorkerPlugin):
    """Binds a run in every worker (present and future); flushes when the worker closes.

    The Nanny gives a closing worker about 4 s (80 % of its 5 s) before SIGKILL. The
    teardown flush takes at most `flush_timeout`; tasks that publish after it are
    delivered by the worker's exit hooks within what remains.
    """

    name = "zstream-mp"
    idempotent = False  # registering again (a new context) replaces the plugin

    def __init__(self, ctx: StreamContext, flush_timeout: float) -> None:
        self.ctx = ctx
        self.flush_timeout = flush_timeout

    def __repr__(self) -> str:
        return f"StreamPlugin({self.ctx!r}, flush_timeout={self.flush_timeout})"

    def setup(self, worker: Any) -> None:
        zstream_mp.bind(self.ctx)

    async def teardown(self, worker: Any) -> None:
        # flush() blocks; the worker's event loop must keep serving the close meanwhile.
        await asyncio.to_thread(zstream_mp.flush, self.flush_timeout)
