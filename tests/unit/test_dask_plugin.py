"""`integrations/_dask_plugin.StreamPlugin`: what a dask worker does with it, without a
cluster: unpickle it by module name, `setup()` binds the run, `teardown()` flushes."""

from __future__ import annotations

import asyncio
import pickle
import threading
import uuid

import pytest

pytest.importorskip("distributed", reason="the dask extra is not installed")

from helpers.mock_server import StoringServer

import zstream_mp
from zstream_mp import _context
from zstream_mp._stream_context import StreamContext
from zstream_mp.integrations import _dask_plugin
from zstream_mp.integrations._dask_plugin import StreamPlugin

SERVER = "http://127.0.0.1:9"


@pytest.fixture
def ctx() -> StreamContext:
    return StreamContext(run_id=str(uuid.uuid4()), server=SERVER, token="tok")


def test_the_plugin_has_one_name_so_registering_again_replaces_it(ctx: StreamContext) -> None:
    plugin = StreamPlugin(ctx, 3.0)
    assert plugin.name == "zstream-mp" and plugin.idempotent is False


def test_a_worker_unpickles_it_by_this_modules_name(ctx: StreamContext) -> None:
    plugin = StreamPlugin(ctx, 3.0)
    raw = pickle.dumps(plugin)
    assert _dask_plugin.__name__.encode() in raw
    copy = pickle.loads(raw)
    assert isinstance(copy, StreamPlugin)
    assert copy.ctx == ctx and copy.flush_timeout == 3.0


def test_repr_names_context_and_timeout_never_the_token(ctx: StreamContext) -> None:
    text = repr(StreamPlugin(ctx, 1.5))
    assert text.startswith("StreamPlugin(") and "flush_timeout=1.5" in text
    assert "'tok'" not in text


def test_setup_binds_the_run_for_the_worker(ctx: StreamContext, publisher: StoringServer) -> None:
    try:
        StreamPlugin(ctx, 1.0).setup(worker=object())
        current = _context.current_context()
        assert current is not None and current.run_id == ctx.run_id
    finally:
        zstream_mp.unbind()


def test_teardown_flushes_off_the_event_loop(
    ctx: StreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[float | None, bool]] = []

    def flush(timeout: float | None = 2.0) -> bool:
        calls.append((timeout, threading.current_thread() is threading.main_thread()))
        return True

    monkeypatch.setattr(zstream_mp, "flush", flush)
    asyncio.run(StreamPlugin(ctx, 2.5).teardown(worker=object()))
    assert calls == [(2.5, False)]  # in a worker thread: the loop kept serving
