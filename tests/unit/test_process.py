"""`_process`: one publisher state per PID, made on the first publish, dropped in a forked
child; its exit path delivers within one budget and keeps the rest in the spool."""

from __future__ import annotations

import logging
import os
import uuid

import pytest
from helpers.mock_server import SERVER, StoringServer

import zstream_mp
from zstream_mp import _api, _process
from zstream_mp._recovery import registry, spool
from zstream_mp._stats import F_EXITED, S_FLAGS
from zstream_mp._wire import (
    ENV_BATCH_SIZE,
    ENV_DURABLE,
    ENV_EXIT_TIMEOUT,
    ENV_REGISTRY,
    ENV_SERVER,
    ENV_TOKEN,
)
from zstream_mp.errors import ConfigurationError

RUN = str(uuid.uuid4())


def _bind(token: str | None = "tok-1") -> None:
    zstream_mp.bind(RUN, server=SERVER, token=token)


def _own_slots() -> list[int]:
    st = _process.existing_state()
    assert st is not None and st.entry is not None
    slots = registry.read_slots(os.path.join(registry.procs_dir(), st.entry.name + ".ctr"))
    assert slots is not None
    return slots


def test_the_state_is_made_once_per_process_on_first_use(publisher: StoringServer) -> None:
    assert _process.existing_state() is None
    st = _process.state()
    assert st.pid == os.getpid() and _process.state() is st and _process.existing_state() is st


def test_a_bind_makes_the_state_so_the_exit_adopts_childrens_spools(
    publisher: StoringServer,
) -> None:
    _bind()
    st = _process.existing_state()
    assert st is not None and st.entry is not None


def test_the_first_publish_registers_the_process_and_its_run(publisher: StoringServer) -> None:
    _bind()
    _api.publish({"a": 1})
    st = _process.existing_state()
    assert st is not None and st.entry is not None and st.hooks_installed
    (found,) = [f for f in registry.scan() if f.name == st.entry.name]
    assert found.identity["runs"] == [RUN] and found.identity["token_files"]


def test_without_the_registry_publishing_still_works(
    publisher: StoringServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_REGISTRY, "0")
    _bind()
    _api.publish({"seq": 1})
    assert _api.flush(10) and publisher.seqs() == [1]
    st = _process.existing_state()
    assert st is not None and st.entry is None and registry.scan() == []


def test_a_bad_setting_is_reported_at_the_first_publish(
    publisher: StoringServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_BATCH_SIZE, "lots")
    _bind()  # a bind does not raise: the publish does
    with pytest.raises(ConfigurationError, match=ENV_BATCH_SIZE):
        _api.publish({"a": 1})


def test_a_forked_child_starts_empty_and_never_sends_the_parents_events(
    publisher: StoringServer,
) -> None:
    _bind()
    publisher.status = 503  # keep the parent's events queued
    for seq in range(3):
        _api.publish({"seq": seq})
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            fresh = _process.existing_state() is None
            publisher.status = 200  # the child's copy of the mock: it records what it sends
            publisher.stored.clear()
            _api.publish({"seq": 99})
            flushed = _api.flush(10)
            st = _process.state()
            code = 0 if fresh and flushed and st.pid == os.getpid() else 2
            os.write(write_fd, f"{st.snapshot().published};{publisher.seqs()}".encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        said = fh.read()
    _, status = os.waitpid(pid, 0)
    publisher.status = 200
    assert status == 0 and said == b"1;[99]"  # its own event only, never the parent's


def test_the_exit_flush_delivers_and_marks_the_entry_exited(publisher: StoringServer) -> None:
    _bind()
    for seq in range(5):
        _api.publish({"seq": seq})
    _process.exit_flush()
    assert publisher.seqs() == list(range(5))
    assert _own_slots()[S_FLAGS] & F_EXITED


def test_an_exit_with_no_budget_keeps_everything_in_the_spool(
    publisher: StoringServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(ENV_EXIT_TIMEOUT, "0")
    publisher.status = 503
    _bind()
    for seq in range(5):
        _api.publish({"seq": seq})
    _process.exit_flush()
    publisher.status = 200
    st = _process.existing_state()
    assert st is not None and st.spill.directory is not None
    assert spool.count_pending(st.spill.directory) == 5
    stats = _api.stats()
    assert (stats.spooled, stats.sent, stats.queued) == (5, 0, 0)
    assert any("exit budget" in r.getMessage() for r in caplog.records)
    assert _own_slots()[S_FLAGS] & F_EXITED


def test_a_durable_process_publishes_into_its_spool_and_removes_it_at_a_clean_exit(
    publisher: StoringServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_DURABLE, "1")
    _bind()
    for seq in range(4):
        _api.publish({"seq": seq})
    st = _process.existing_state()
    assert st is not None and st.queue.durable and _api.stats().durable
    assert len(spool.list_spools()) == 1
    _process.exit_flush()
    assert publisher.seqs() == [0, 1, 2, 3]
    assert spool.list_spools() == []


def test_a_streaming_disabled_server_mutes_the_process_with_one_warning(
    publisher: StoringServer, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.status = 501
    _bind()
    _api.publish({"seq": 1})
    _api.flush(10)
    _api.publish({"seq": 2})
    stats = _api.stats()
    assert stats.muted and stats.dropped["muted"] >= 1
    assert sum("Streaming is disabled" in r.getMessage() for r in caplog.records) == 1


def test_an_adopted_spool_is_sent_with_the_processs_own_token_for_that_server(
    publisher: StoringServer,
) -> None:
    _bind(token="mine")
    _api.publish({"a": 1})
    assert _process.own_token_for(SERVER) == "mine"
    assert _process.own_token_for("http://127.0.0.1:10") is None


def test_the_environment_token_goes_only_to_the_environment_server(
    publisher: StoringServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SERVER, SERVER)
    monkeypatch.setenv(ENV_TOKEN, "from-env")
    assert _process.own_token_for(SERVER) == "from-env"
    assert _process.own_token_for("http://127.0.0.1:10") is None


def test_a_publish_from_a_signal_handler_during_the_first_publish_is_counted(
    publisher: StoringServer, caplog: pytest.LogCaptureFixture
) -> None:
    """It cannot be queued (the queue is being built); it is counted as failed, once said."""
    caplog.set_level(logging.WARNING, logger="zstream_mp")
    _process.drop_reentered("progress")
    _bind()
    _api.publish({"a": 1})
    stats = _api.stats()
    assert stats.dropped["failed"] == 1 and stats.published == 2
    assert any("signal handler" in r.getMessage() for r in caplog.records)
