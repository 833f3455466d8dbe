"""The run list's parts without a server: summaries read from frame bytes, the registry's
first-seen pages, the page stream's framing."""

from __future__ import annotations

import uuid

from zstream_mp.server.brokers.run_meta import BatchFacts, RunMeta
from zstream_mp.server.models import END_FRAME_BYTES, EventFrame, StreamEvent, encode_frame
from zstream_mp.server.runs import RunRegistry
from zstream_mp.server.ui_stream import as_page_frame


def _frame(step: str | None, payload: dict[str, object]) -> bytes:
    event = StreamEvent(pipeline_run_id=uuid.uuid4(), step_name=step, kind="k", payload=payload)
    return encode_frame(EventFrame(event=event))


def test_batch_facts_read_steps_pids_and_end_from_bytes() -> None:
    facts = BatchFacts.of(
        [
            _frame("train", {"pid": 12, "loss": 0.5}),
            _frame('we"ird\\name', {"nested": {"pid": 13}}),
            _frame(None, {"text": '"pid":99,'}),  # inside a string: not a pid
            END_FRAME_BYTES,
        ]
    )
    assert facts.events == 3 and facts.ended
    assert facts.steps == {"train", 'we"ird\\name'}
    assert facts.pids == {12, 13}
    meta = RunMeta()
    meta.add(facts, 100.0, "3")
    meta.add(BatchFacts.of([_frame("eval", {})]), 105.0, "4")
    assert (meta.first, meta.last, meta.events, meta.last_id) == (100.0, 105.0, 4, "4")


def test_registry_pages_newest_and_oldest_first_and_skips_forgotten() -> None:
    runs = RunRegistry(max_runs=2000)
    ids = [uuid.uuid4() for _ in range(2500)]  # the first 500 are forgotten (max_runs)
    for run_id in ids:
        runs.touch(run_id)
    for run_id in ids[-10:]:
        runs.touch(run_id)  # touched again: its place is where it was first seen
    for newest in (True, False):
        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            page = runs.page(newest, cursor, 300)
            seen += [row[2] for row in page]
            if len(page) < 300:
                break
            cursor = page[-1][:2]
        assert seen == (ids[500:][::-1] if newest else ids[500:])


def test_page_frames_rename_time_and_keep_control_frames() -> None:
    def stamp(entry_id: str) -> float | None:
        return 1700000000.25 if entry_id == "7" else None

    timed = as_page_frame(b'id: 7\nevent: token\ndata: {"kind":"token"}\n\n', stamp)
    assert timed == b'id: 7\nevent: message\ndata: {"kind":"token","received_at":1700000000.25}\n\n'
    untimed = as_page_frame(b'id: 8\nevent: x\ndata: {"a":1}\n\n', stamp)
    assert untimed == b'id: 8\nevent: message\ndata: {"a":1}\n\n'
    gap = b'event: gap\ndata: {"reason": "overflow"}\n\n'
    assert as_page_frame(gap, stamp) == gap
    cursor = b"id: 9\nevent: cursor\ndata: {}\n\n"
    assert as_page_frame(cursor, stamp) == cursor
    assert as_page_frame(b": ping\n\n", stamp).startswith(b'event: clock\ndata: {"now": ')
