"""`cli/_dashboard`: a per-worker tally of a run's stream, shown as plain lines off a
terminal and as a rich table on one. Everything shown comes from the streamed events."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

from zstream_mp.cli import _dashboard
from zstream_mp.cli._dashboard import Dashboard, Tally, worker_of
from zstream_mp.consumer import Event, Gap


def _event(kind: str = "event", correlation_id: str | None = None, **payload: Any) -> Event:
    return Event(
        id="1-0",
        kind=kind,
        pipeline_run_id="r",
        correlation_id=correlation_id,
        payload=payload,
    )


def test_a_worker_is_named_by_its_payload_else_its_correlation_id() -> None:
    assert worker_of(_event(worker="w-1", correlation_id="c")) == "w-1"
    assert worker_of(_event(worker=7)) == "7"
    assert worker_of(_event(worker=True, correlation_id="c")) == "c"  # a bool is no name
    assert worker_of(_event(worker=["x"], correlation_id="c")) == "c"
    assert worker_of(_event()) is None


def test_a_workers_name_is_made_printable_and_cut() -> None:
    assert worker_of(_event(worker="\x1b]52;evil\x07")) == "\\u001b]52;evil\\u0007"
    assert worker_of(_event(worker="x" * 500)) == "x" * _dashboard._NAME_MAX


def test_progress_events_and_drops_fill_a_workers_row() -> None:
    tally = Tally()
    tally.add(_event("progress", worker="a", done=3, total=10))
    tally.add(_event("log", worker="a", line="hi"))
    tally.add(_event("progress", worker="a", done=5, total=10, dropped=2))
    tally.add(_event("event", worker="b", state="finished"))
    tally.add(_event("event"))  # no worker: the totals only
    a, b = tally.rows["a"], tally.rows["b"]
    assert (a.done, a.total, a.events, a.dropped) == (5, 10, 3, 2)
    assert b.finished and b.done is None and b.events == 1
    assert tally.events == 5 and tally.state == "live"


@pytest.mark.parametrize("done", ["3", None, True, [3]])
def test_progress_that_is_not_a_number_is_ignored(done: object) -> None:
    tally = Tally()
    tally.add(_event("progress", worker="a", done=done, total=10))
    assert tally.rows["a"].done is None


def test_progress_of_another_kind_does_not_move_the_bar() -> None:
    tally = Tally()
    tally.add(_event("event", worker="a", done=3, total=10))
    assert tally.rows["a"].done is None


def test_gaps_are_counted_with_a_printable_reason() -> None:
    tally = Tally()
    tally.add(Gap("overflow\x1b[2J"))
    assert tally.gaps == ["overflow\\u001b[2J"] and tally.events == 0


def test_rows_are_bounded_and_further_workers_count_in_the_totals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_dashboard, "_ROWS_MAX", 3)
    tally = Tally()
    for i in range(10):
        tally.add(_event(worker=f"w{i}"))
    assert len(tally.rows) == 3 and tally.events == 10


def test_the_summary_is_one_line_with_every_worker_and_the_totals() -> None:
    tally = Tally()
    assert "no events yet" in tally.summary() and "connecting" in tally.summary()
    tally.add(_event("progress", worker="b", done=1, total=4))
    tally.add(_event("progress", worker="a", done=2, total=None))
    tally.add(Gap("outage"))
    line = tally.summary()
    assert "\n" not in line
    assert line.startswith("progress: a 2/? (1 events), b 1/4 (1 events) | events 2,")
    assert line.endswith("gaps 1, live")


def test_the_tally_can_be_fed_from_several_threads() -> None:
    tally = Tally()

    def feed(name: str) -> None:
        for _ in range(500):
            tally.add(_event(worker=name))

    threads = [threading.Thread(target=feed, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tally.events == 2000 and all(r.events == 500 for r in tally.rows.values())


def test_off_a_terminal_the_dashboard_ends_with_a_plain_summary_line() -> None:
    out = io.StringIO()
    tally = Tally()
    with Dashboard(tally, out, "run r") as board:
        assert board.plain  # a StringIO is not a terminal
        tally.add(_event("progress", worker="a", done=1, total=2))
    assert out.getvalue().splitlines()[-1] == tally.summary()


def test_on_a_terminal_the_table_shows_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich", reason="the tui extra is not installed")
    from rich.console import Console

    tally = Tally()
    tally.add(_event("progress", worker="alpha", done=3, total=4))
    tally.add(_event("progress", worker="beta", done=4, total=4, state="finished"))
    tally.add(Gap("overflow"))
    board = Dashboard(tally, io.StringIO(), "run \x1b[31mr", plain=False)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(board.renderable())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "alpha" in text and "3/4" in text and "4/4 ✓" in text
    assert "gaps 1" in text and "\x1b[31m" not in text


def test_a_live_dashboard_starts_and_stops_cleanly() -> None:
    pytest.importorskip("rich", reason="the tui extra is not installed")
    out = io.StringIO()
    tally = Tally()
    with Dashboard(tally, out, "run r", plain=False):
        tally.add(_event(worker="a"))
    assert "a" in out.getvalue()


@pytest.mark.parametrize("done", [float("inf"), float("nan")])
def test_a_progress_count_that_is_not_finite_is_ignored(done: float) -> None:
    tally = Tally()
    tally.add(_event("progress", worker="a", done=done, total=10))
    assert tally.rows["a"].done is None and tally.events == 1
