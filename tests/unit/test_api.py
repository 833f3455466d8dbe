"""`_api`: `publish()`, `flush()`, `flush_tree()` and `stats()` as a caller uses them.
Bad input is a typed error in the caller's thread; delivery goes to a mock server."""

from __future__ import annotations

import logging
import math
import os
import uuid

import pytest
from helpers.dead_publisher import LeaveDead
from helpers.mock_server import SERVER, StoringServer

import zstream_mp
from zstream_mp import _api
from zstream_mp._stats import PublisherStats, TreeStats
from zstream_mp.errors import InvalidEventError, PayloadTooLargeError, ReservedKindError

RUN = str(uuid.uuid4())


def _bound() -> None:
    zstream_mp.bind(RUN, server=SERVER, token="tok-1")


def test_events_reach_the_server_in_order_with_their_envelope(publisher: StoringServer) -> None:
    _bound()
    for seq in range(20):
        _api.publish({"seq": seq}, kind="progress", correlation_id="c-1", index=seq)
    assert _api.flush(10)
    assert publisher.seqs() == list(range(20))
    first = publisher.stored[0]
    assert first["pipeline_run_id"] == RUN and first["kind"] == "progress"
    assert first["correlation_id"] == "c-1" and first["index"] == 0
    assert {r.headers["authorization"] for r in publisher.posts} == {"Bearer tok-1"}
    stats = _api.stats()
    assert (stats.published, stats.sent, stats.queued, stats.pid) == (20, 20, 0, os.getpid())


def test_outside_any_run_an_event_is_dropped_and_counted(
    publisher: StoringServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zstream_mp")
    _api.publish({"a": 1})
    assert _api.stats().dropped["no_context"] == 1
    assert publisher.posts == []
    assert any("outside any run" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kind": "end"}, ReservedKindError),
        ({"kind": "gap"}, ReservedKindError),
        ({"kind": ""}, InvalidEventError),
        ({"kind": "two\nlines"}, InvalidEventError),
        ({"kind": 3}, InvalidEventError),
    ],
)
def test_a_bad_kind_is_a_typed_error_and_queues_nothing(
    publisher: StoringServer, kwargs: dict[str, object], error: type[Exception]
) -> None:
    _bound()
    _api.publish({"before": True})
    with pytest.raises(error):
        _api.publish({"a": 1}, **kwargs)  # type: ignore[arg-type]
    assert _api.flush(10)
    assert [e["payload"] for e in publisher.stored] == [{"before": True}]


def test_a_payload_that_is_not_json_is_a_typed_error(publisher: StoringServer) -> None:
    _bound()
    with pytest.raises(InvalidEventError):
        _api.publish({"a": object()})
    with pytest.raises(InvalidEventError):
        _api.publish(["not", "a", "dict"])  # type: ignore[arg-type]


def test_an_oversize_payload_is_refused_and_counted(publisher: StoringServer) -> None:
    _bound()
    with pytest.raises(PayloadTooLargeError):
        _api.publish({"blob": "x" * 70_000})
    assert _api.stats().dropped["oversize"] == 1


def test_flush_says_false_when_the_server_refused_events(publisher: StoringServer) -> None:
    publisher.status = 422
    _bound()
    _api.publish({"a": 1})
    assert not _api.flush(10)
    assert _api.stats().dropped["rejected"] == 1
    publisher.status = 200
    _api.publish({"a": 2})
    assert _api.flush(10)  # the refusal was said once: the next flush is clean


def test_flush_before_any_publish_is_true_at_once(publisher: StoringServer) -> None:
    assert _api.flush(0)
    assert _api.flush(None)


@pytest.mark.parametrize("timeout", [-1.0, math.nan])
def test_a_bad_flush_timeout_is_a_value_error(publisher: StoringServer, timeout: float) -> None:
    _bound()
    _api.publish({"a": 1})
    with pytest.raises(ValueError, match="timeout"):
        _api.flush(timeout)


@pytest.mark.parametrize("timeout", [-1.0, math.nan])
def test_a_bad_flush_tree_timeout_is_a_value_error(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        _api.flush_tree(timeout)


def test_stats_before_the_first_publish_are_zeros_of_this_process() -> None:
    stats = _api.stats()
    assert isinstance(stats, PublisherStats) and stats.pid == os.getpid()


@pytest.mark.parametrize("scope", ["processes", "", "TREE"])
def test_an_unknown_stats_scope_is_a_value_error(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        _api.stats(scope)  # type: ignore[call-overload]


def test_run_stats_need_a_run_id() -> None:
    with pytest.raises(ValueError, match="run_id"):
        _api.stats("run")


def test_flush_tree_delivers_what_a_dead_child_left(
    publisher: StoringServer, leave_dead: LeaveDead
) -> None:
    _bound()
    _api.publish({"seq": 100})
    leave_dead(3, RUN)
    assert _api.flush_tree(10)
    assert sorted(publisher.seqs()) == [0, 1, 2, 100]
    tree = _api.stats("tree")
    assert isinstance(tree, TreeStats) and tree.spool_pending == 0
    assert _api.stats().adopted == 3


def test_run_stats_see_every_publisher_of_the_run(
    publisher: StoringServer, leave_dead: LeaveDead
) -> None:
    _bound()
    _api.publish({"seq": 1})
    leave_dead(2, RUN)
    stats = _api.stats("run", RUN)
    assert stats.run_id == RUN and stats.published == 3


def test_a_step_end_delivers_what_this_process_left(publisher: StoringServer) -> None:
    _bound()
    _api.publish({"seq": 5})
    _api.step_ended()
    assert publisher.seqs() == [5]


@pytest.mark.parametrize("timeout", [-1.0, math.nan])
def test_a_bad_flush_timeout_is_a_value_error_before_any_publish_too(
    publisher: StoringServer, timeout: float
) -> None:
    with pytest.raises(ValueError, match="timeout"):
        _api.flush(timeout)
