"""`_recovery/spool`: the on-disk format (segments, a torn tail ignored), the state page,
the destinations without tokens, the server marks and the atomic claim."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from zstream_mp import _handoff
from zstream_mp._recovery import spool
from zstream_mp._recovery.liveness import own_identity
from zstream_mp._recovery.spool import (
    SEG_HEADER,
    StatePage,
    batch_key,
    claim,
    count_pending,
    list_spools,
    parse_name,
    pending_records,
    read_dests,
    read_segment,
    spool_root,
    unclaim,
    write_dests,
    write_segment,
)
from zstream_mp._stream_context import Destination

SERVER = "http://127.0.0.1:9"
RUN = str(uuid.uuid4())


def _dir(name: str = "p123-abcd") -> str:
    path = os.path.join(spool_root(), name)
    spool.ensure_dir(path)
    return path


def _records(n: int, dest: int = 0) -> list[tuple[int, bytes]]:
    return [(dest, json.dumps({"seq": i}).encode()) for i in range(n)]


def test_a_segment_reads_back_every_record_in_order() -> None:
    directory = _dir()
    write_segment(directory, 10, [*_records(3), (1, b"x" * 70000)])
    (path,) = spool.segments(directory)
    read = list(read_segment(path))
    assert [r.seq for r in read] == [10, 11, 12, 13]
    assert [r.dest for r in read] == [0, 0, 0, 1]
    assert read[0].event == b'{"seq": 0}' and read[3].event == b"x" * 70_000


def test_a_torn_tail_is_ignored_and_the_committed_records_kept() -> None:
    directory = _dir()
    whole = spool.encode_segment(0, _records(3))
    path = os.path.join(directory, spool.segment_name(0))
    with open(path, "wb") as fh:
        fh.write(whole[: len(whole) - 4])  # killed in the middle of the last record
    os.chmod(path, 0o600)
    assert [r.seq for r in read_segment(path)] == [0, 1]


def test_records_written_past_the_committed_end_are_not_read() -> None:
    directory = _dir()
    committed = spool.encode_segment(0, _records(2))
    extra = spool.encode_segment(2, _records(1))[SEG_HEADER:]
    path = os.path.join(directory, spool.segment_name(0))
    with open(path, "wb") as fh:
        fh.write(committed + extra)
    os.chmod(path, 0o600)
    assert [r.seq for r in read_segment(path)] == [0, 1]


@pytest.mark.parametrize("content", [b"", b"short", b"NOTMAGIC" + bytes(40)])
def test_a_file_that_is_not_a_segment_yields_nothing(content: bytes) -> None:
    path = os.path.join(_dir(), spool.segment_name(0))
    with open(path, "wb") as fh:
        fh.write(content)
    os.chmod(path, 0o600)
    assert list(read_segment(path)) == []


def test_a_segment_is_never_overwritten() -> None:
    directory = _dir()
    write_segment(directory, 0, _records(1))
    with pytest.raises(FileExistsError):
        write_segment(directory, 0, _records(2))


def test_segments_are_read_in_seq_order_and_settled_ones_skipped() -> None:
    directory = _dir()
    write_segment(directory, 5, _records(5))
    write_segment(directory, 0, _records(5))
    assert [r.seq for r in pending_records(directory, 0)] == list(range(10))
    assert [r.seq for r in pending_records(directory, 7)] == [7, 8, 9]


def test_count_pending_follows_the_state_page() -> None:
    directory = _dir()
    write_segment(directory, 0, _records(6))
    assert count_pending(directory) == 6  # no state page yet: nothing settled
    page = StatePage(os.path.join(directory, "state"), create=True)
    page.resolve(4)
    page.close()
    assert count_pending(directory) == 2


def test_a_torn_state_page_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(OSError, match="torn"):
        StatePage(str(path), create=False)


def test_the_state_page_records_one_batch_in_flight_with_its_key(tmp_path: Path) -> None:
    page = StatePage(str(tmp_path / "state"), create=True)
    try:
        assert page.resolved_below == 0 and page.inflight() is None
        key = batch_key("abcd", 0, 9)
        page.set_inflight(0, 9, key, started=1000.5)
        assert page.inflight() == (0, 9, key)
        assert page.inflight_started == 1000.5
        page.resolve_inflight()
        assert page.inflight() is None and page.resolved_below == 0
        page.set_inflight(10, 19, batch_key("abcd", 10, 19))
        page.resolve(20)
        assert page.inflight() is None and page.resolved_below == 20
    finally:
        page.close()


def test_an_inflight_range_already_settled_is_not_in_flight(tmp_path: Path) -> None:
    page = StatePage(str(tmp_path / "state"), create=True)
    try:
        page.resolve(10)
        page.set_inflight(5, 9, batch_key("x", 5, 9))
        assert page.inflight() is None
    finally:
        page.close()


def test_another_process_reopening_the_page_sees_the_same_state(tmp_path: Path) -> None:
    path = str(tmp_path / "state")
    writer = StatePage(path, create=True)
    key = batch_key("abcd", 3, 4)
    writer.resolve(3)
    writer.set_inflight(3, 4, key)
    reader = StatePage(path, create=False)
    try:
        assert reader.resolved_below == 3 and reader.inflight() == (3, 4, key)
    finally:
        reader.close()
        writer.close()


def test_the_batch_key_is_the_same_for_every_deliverer_and_differs_per_batch() -> None:
    assert batch_key("abcd", 0, 9) == batch_key("abcd", 0, 9)
    assert len({batch_key("abcd", 0, 9), batch_key("abcd", 0, 8), batch_key("abce", 0, 9)}) == 3
    uuid.UUID(batch_key("abcd", 0, 9))  # a valid Idempotency-Key value


def test_destinations_keep_the_token_in_a_private_file_not_in_the_spool() -> None:
    directory = _dir()
    dests = [
        Destination(run_id=RUN, server=SERVER, token="s3cret-token", prefix=b""),
        Destination(run_id=RUN, server="http://127.0.0.1:10", token=None, prefix=b""),
    ]
    write_dests(directory, dests, deduplicating={SERVER})
    raw = Path(directory, "dests.json").read_text()
    assert "s3cret-token" not in raw
    first, second = read_dests(directory)
    assert first["run_id"] == RUN and first["server"] == SERVER and first["deduplicates"]
    assert _handoff.read_token_file(first["token_file"]) == "s3cret-token"
    assert second["token_file"] is None and not second["deduplicates"]


@pytest.mark.parametrize("content", [None, "not json", '{"a": 1}'])
def test_unreadable_destinations_are_none(content: str | None) -> None:
    directory = _dir()
    if content is not None:
        Path(directory, "dests.json").write_text(content)
        os.chmod(os.path.join(directory, "dests.json"), 0o600)
    assert read_dests(directory) == []


def test_a_servers_deduplication_is_remembered_and_forgotten() -> None:
    assert not spool.deduplicates(SERVER)
    spool.note_deduplicating(SERVER, True)
    assert spool.deduplicates(SERVER)
    assert not spool.deduplicates("http://127.0.0.1:10")
    spool.note_deduplicating(SERVER, False)
    assert not spool.deduplicates(SERVER)
    spool.note_deduplicating(SERVER, False)  # forgetting twice is fine


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("p12-ab01", (12, "ab01", None)),
        ("p12-ab01.claim-34-5678", (12, "ab01", (34, 5678))),
        ("p12-ab01.tmp", None),
        ("q12-ab01", None),
        ("pxx-ab01", None),
        ("p12", None),
        ("p12-ab01.claim-34-x", None),
    ],
)
def test_spool_names_parse_or_are_skipped(
    name: str, expected: tuple[int, str, tuple[int, int] | None] | None
) -> None:
    found = parse_name("/root", name)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found.owner_pid, found.owner_iid, found.claimer) == expected
        assert found.entry_name == f"p{expected[0]}-{expected[1]}"


def test_list_spools_sees_only_spool_directories() -> None:
    _dir("p1-aa")
    _dir("p2-bb")
    Path(spool_root(), "junk").mkdir()
    assert [s.entry_name for s in list_spools()] == ["p1-aa", "p2-bb"]


def test_one_claim_wins_and_unclaim_gives_the_spool_back() -> None:
    path = _dir("p7-cc")
    (found,) = list_spools()
    claimed = claim(found)
    me = own_identity()
    assert claimed is not None and claimed.endswith(f".claim-{me[0]}-{me[1]}")
    assert claim(found) is None  # the name is gone: a second claimer loses
    (again,) = list_spools()
    assert again.claimer == me and claim(again) == claimed  # already ours
    unclaim(claimed)
    assert os.path.isdir(path) and list_spools()[0].claimer is None


def test_unclaim_of_an_unclaimed_path_changes_nothing() -> None:
    path = _dir("p8-dd")
    unclaim(path)
    assert os.path.isdir(path)


def test_remove_deletes_the_spool_and_ignores_a_missing_one() -> None:
    path = _dir("p9-ee")
    write_segment(path, 0, _records(1))
    spool.remove(path)
    spool.remove(path)
    assert not os.path.exists(path)
