"""The recovery wing's pieces alone: the spill, delivering a spool, the in-flight check, the
token files, finding a run through an ancestor. Temp state dirs and `httpx.MockTransport`;
the same paths with real processes and servers are in tests/recovery/ and tests/test_spool.py.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from helpers.mock_server import StoringServer

from zstream_mp import _handoff
from zstream_mp._queue import EventQueue
from zstream_mp._recovery import adopt, landed, spool
from zstream_mp._recovery.spill import Spill
from zstream_mp._stream_context import Destination

SERVER = "http://127.0.0.1:9"
RUN = str(uuid.uuid4())


def _dest(token: str | None = "tok-1") -> Destination:
    prefix = f'{{"pipeline_run_id":"{RUN}","step_run_id":null,"step_name":null,"kind":'.encode()
    return Destination(run_id=RUN, server=SERVER, token=token, prefix=prefix)


def _event(seq: int) -> bytes:
    return json.dumps({"kind": "event", "payload": {"seq": seq}}).encode()


def _spill(queue: EventQueue, n: int, maybe_landed: bool = False) -> Spill:
    """A spill of `n` events, the first 10 of them on the wire."""
    for i in range(n):
        queue.append(_dest(), _event(i))
    batch = queue.take(10, idle=0.0)
    assert batch is not None
    queue.hold([(batch[0][0], [e for _, e in batch])])
    queue.begin_post()
    spill = Spill("p1-abcd", 1 << 20)
    assert spill.spill_unsettled(queue, "test", maybe_landed=maybe_landed) == n
    return spill


def test_a_spill_keeps_order_and_the_token_in_a_file_never_in_the_spool() -> None:
    queue = EventQueue(100)
    spill = _spill(queue, 25)
    assert spill.directory is not None and spill.pending()
    records = spool.pending_records(spill.directory, 0)
    assert [json.loads(r.event)["payload"]["seq"] for r in records] == list(range(25))
    (dest,) = spool.read_dests(spill.directory)
    assert dest["server"] == SERVER and "tok-1" not in json.dumps(dest)
    assert _handoff.read_token_file(dest["token_file"]) == "tok-1"
    assert queue.snapshot(0, None).spooled == 25


def test_a_batch_on_the_wire_that_lands_after_the_spill_is_settled_not_resent() -> None:
    queue = EventQueue(100)
    spill = _spill(queue, 25, maybe_landed=True)
    assert spill.awaiting_verdict and not spill.due()  # its sender's answer decides
    queue.settle(10)  # ... and it was delivered
    assert not spill.awaiting_verdict
    page = spill.page
    assert page is not None and page.resolved_below == 10 and page.inflight() is None
    stats = queue.snapshot(0, None)
    assert (stats.sent, stats.spooled) == (10, 15)


def test_the_owner_delivers_its_spool_in_order_once() -> None:
    queue = EventQueue(100)
    spill = _spill(queue, 25)
    queue.settle(10, "failed")  # the batch on the wire failed: it stays spooled
    server = StoringServer()
    result = spill.resume(server.transport(), time.monotonic() + 10, lambda s: None)
    assert result.complete and result.sent == 25
    assert server.seqs() == list(range(25))
    assert all(r.headers["authorization"] == "Bearer tok-1" for r in server.posts)
    assert not spill.pending()


def test_a_401_leaves_the_spool_for_later_and_says_why() -> None:
    queue = EventQueue(100)
    spill = _spill(queue, 25)
    queue.settle(10, "failed")
    result = spill.resume(StoringServer(401).transport(), time.monotonic() + 10, lambda s: None)
    assert not result.complete and result.refused == 401 and result.sent == 0
    assert spill.pending() and not spill.due()  # backs off before trying again
    assert spill.directory is not None
    assert "401" in (adopt.last_attempt(spill.directory) or "")


def test_an_in_flight_batch_that_landed_is_not_sent_again_on_a_storing_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(landed, "SETTLE", 0.0)
    monkeypatch.setattr(landed, "QUIET", 0.05)
    queue = EventQueue(100)
    spill = _spill(queue, 25, maybe_landed=True)
    queue.settle(10, "failed")  # the sender gave up, but the server had stored it
    server = StoringServer()
    server.stored.extend(json.loads(_event(i)) for i in range(10))
    result = spill.resume(server.transport(), time.monotonic() + 10, lambda s: None)
    assert result.complete and len(server.streams) == 1
    assert server.seqs() == list(range(25))  # 0..9 once, from the first attempt


def test_a_server_that_deduplicates_gets_the_in_flight_batch_without_a_stream_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(landed, "SETTLE", 60.0)  # a check would have to wait: it must not
    queue = EventQueue(100)
    spill = _spill(queue, 25, maybe_landed=True)
    spill.server_deduplicates(SERVER)
    queue.settle(10, "failed")
    server = StoringServer(deduplicates=True)
    result = spill.resume(server.transport(), time.monotonic() + 5, lambda s: None)
    assert result.complete and server.streams == []
    assert server.seqs() == list(range(25))


def test_too_early_to_tell_leaves_the_spool_rather_than_guessing() -> None:
    queue = EventQueue(100)
    spill = _spill(queue, 25, maybe_landed=True)
    queue.settle(10, "failed")
    server = StoringServer()
    result = spill.resume(server.transport(), time.monotonic() + 1.0, lambda s: None)
    assert not result.complete and not server.posts  # sent 0 s ago, settle is 5 s


def test_a_token_file_is_read_only_from_the_state_dir(tmp_path: Path) -> None:
    outside = tmp_path / ("token-" + "0" * 24)
    outside.write_text("secret")
    outside.chmod(0o600)
    assert _handoff.read_token_file(str(outside)) is None
    private = tmp_path / "id_rsa"
    private.write_text("key")
    private.chmod(0o600)
    assert _handoff.read_token_file(str(private)) is None
    inside = _handoff.token_file("tok-9")
    assert _handoff.read_token_file(inside) == "tok-9"


def test_a_context_naming_a_foreign_token_file_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = tmp_path / "secret"
    private.write_text("do-not-send")
    private.chmod(0o600)
    raw = json.dumps({"run_id": RUN, "server": SERVER, "token_file": str(private)})
    assert _handoff.parse(raw) is None
    assert any("ZSTREAM_CONTEXT" in r.getMessage() for r in caplog.records)


def test_a_process_started_before_the_bind_finds_its_ancestors_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parent = os.getppid()
    from zstream_mp._recovery import liveness

    ctx = {"run_id": RUN, "server": SERVER, "origin": parent}
    ctx["origin_start"] = liveness.start_of(parent)
    path = Path(_handoff.state_dir()) / f"ctx-{parent}.json"
    path.write_text(json.dumps(ctx))
    path.chmod(0o600)
    monkeypatch.delenv("ZSTREAM_CONTEXT", raising=False)
    _handoff.forget_inherited()
    found = _handoff.inherited()
    assert found is not None and found.run_id == RUN and found.server == SERVER
    ctx["origin_start"] = 1  # another process that once had that PID
    path.write_text(json.dumps(ctx))
    _handoff.forget_inherited()
    assert _handoff.inherited() is None
    _handoff.forget_inherited()
