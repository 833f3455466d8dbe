"""`_stats`: counters as one 8-byte store into a page that other processes can read, and
the frozen, picklable stats values built from it."""

from __future__ import annotations

import mmap
import pickle

import pytest

from zstream_mp._stats import (
    DROP_REASONS,
    F_DURABLE,
    F_MUTED,
    MAGIC,
    N_SLOTS,
    PAGE_SIZE,
    QUEUE_DROPS,
    S_MAGIC,
    S_SPOOL_SENT,
    Counters,
    ProcessRow,
    PublisherStats,
    TreeStats,
    stats_from_slots,
)


def test_a_fresh_page_is_stamped_and_zero() -> None:
    counters = Counters()
    assert counters.slots[S_MAGIC] == MAGIC
    snap = counters.snapshot(42, queued=0, muted=False)
    assert (snap.pid, snap.published, snap.sent, snap.batches, snap.retries) == (42, 0, 0, 0, 0)
    assert dict(snap.dropped) == dict.fromkeys(DROP_REASONS, 0)
    assert snap.dropped_total == 0 and not snap.durable and snap.last_failure is None


def test_the_page_holds_every_slot() -> None:
    assert N_SLOTS * 8 <= PAGE_SIZE


def test_another_view_of_the_same_page_sees_every_update() -> None:
    """What a reader of the registry's mapped file sees: the writer's stores, live."""
    page = mmap.mmap(-1, PAGE_SIZE)
    writer = Counters(page)
    writer.published += 5
    writer.sent += 3
    writer.dropped["overflow"] += 2
    reader_slots = memoryview(page).cast("q")
    stats = stats_from_slots(7, list(reader_slots[:N_SLOTS]))
    assert (stats.published, stats.sent, stats.dropped["overflow"]) == (5, 3, 2)
    assert stats.queued == 0  # 5 published = 3 sent + 2 dropped from the queue
    del reader_slots
    del writer
    page.close()


def test_drops_are_a_mapping_over_the_page() -> None:
    counters = Counters()
    counters.dropped["muted"] += 4
    counters.dropped["spool_full"] = 1
    assert counters.dropped["muted"] == 4
    assert list(counters.dropped) == list(DROP_REASONS)
    assert len(counters.dropped) == len(DROP_REASONS)
    assert counters.snapshot(1, 0, False).dropped_total == 5


def test_an_unknown_drop_reason_is_refused() -> None:
    counters = Counters()
    with pytest.raises(KeyError):
        counters.dropped["bored"] += 1
    with pytest.raises(KeyError):
        counters.dropped["bored"]


def test_drop_reasons_cannot_be_removed() -> None:
    with pytest.raises(TypeError):
        del Counters().dropped["overflow"]


def test_queued_is_what_is_neither_sent_spooled_nor_dropped_from_the_queue() -> None:
    counters = Counters()
    counters.published = 20
    counters.sent = 10
    counters.spooled = 3
    for reason in QUEUE_DROPS:
        counters.dropped[reason] = 1
    counters.dropped["oversize"] = 9  # refused before the queue: not part of `published`
    counters.dropped["no_context"] = 9
    stats = stats_from_slots(1, list(counters.slots[:N_SLOTS]))
    assert stats.queued == 20 - 10 - 3 - len(QUEUE_DROPS)


def test_queued_never_goes_below_zero() -> None:
    counters = Counters()
    counters.sent = 5  # counted by an adopter before the owner's publish count landed
    assert stats_from_slots(1, list(counters.slots[:N_SLOTS])).queued == 0


def test_flags_and_explicit_values_win_over_the_page() -> None:
    counters = Counters()
    counters.flags = F_MUTED | F_DURABLE
    slots = list(counters.slots[:N_SLOTS])
    derived = stats_from_slots(1, slots)
    assert derived.muted and derived.durable
    told = stats_from_slots(1, slots, queued=7, muted=False)
    assert told.queued == 7 and not told.muted


def test_spool_counters_are_read_from_their_slots() -> None:
    counters = Counters()
    counters.spooled = 9
    counters.adopted = 4
    counters.slots[S_SPOOL_SENT] = 6
    stats = counters.snapshot(1, 0, False)
    assert (stats.spooled, stats.spool_sent, stats.adopted) == (9, 6, 4)


def test_a_snapshot_carries_the_last_failure_when_there_is_one() -> None:
    assert Counters().snapshot(1, 0, False, "srv: 503").last_failure == "srv: 503"
    assert Counters().snapshot(1, 0, False, None).last_failure is None


def _row(pid: int, state: str, *, queued: int = 0, pending: int = 0, **kw: int) -> ProcessRow:
    stats = PublisherStats(
        pid=pid, published=kw.get("published", 0), sent=kw.get("sent", 0), queued=queued,
        batches=0, retries=0, muted=False,
        dropped={"overflow": kw.get("overflow", 0)}, spooled=kw.get("spooled", 0),
        spool_sent=kw.get("spool_sent", 0),
    )  # fmt: skip
    return ProcessRow(pid, f"iid-{pid}", state, ("run",), stats, pending)


@pytest.mark.parametrize(
    ("state", "queued", "pending", "delivered"),
    [
        ("alive", 0, 0, True),
        ("alive", 3, 0, False),  # still has events to send
        ("exited", 3, 0, True),  # gone: what it had is dropped or spooled
        ("dead", 0, 2, False),  # its spool still waits for an adopter
        ("exited", 0, 0, True),
    ],
)
def test_a_row_is_delivered_when_nothing_waits(
    state: str, queued: int, pending: int, delivered: bool
) -> None:
    assert _row(1, state, queued=queued, pending=pending).delivered is delivered


def test_tree_stats_sum_their_rows() -> None:
    tree = TreeStats(
        "tree",
        1,
        None,
        (
            _row(1, "alive", published=10, sent=8, queued=2, overflow=0),
            _row(2, "dead", published=6, sent=1, spooled=5, spool_sent=3, pending=2, overflow=1),
        ),
    )
    assert (tree.published, tree.sent, tree.queued) == (16, 9, 2)
    assert (tree.spooled, tree.spool_sent, tree.spool_pending) == (5, 3, 2)
    assert tree.dropped["overflow"] == 1 and set(tree.dropped) == set(DROP_REASONS)
    assert tree.spooled_share == pytest.approx(5 / 16)


def test_an_empty_tree_has_no_share_and_no_division_by_zero() -> None:
    tree = TreeStats("run", None, "r", ())
    assert tree.published == 0 and tree.spooled_share == 0.0


def test_the_values_pickle_for_a_pool_worker_to_return() -> None:
    counters = Counters()
    counters.published = 3
    counters.dropped["failed"] = 1
    snap = counters.snapshot(5, 2, False, "x: y")
    tree = TreeStats("tree", 5, None, (ProcessRow(5, "iid", "alive", ("r",), snap, 0),))
    assert pickle.loads(pickle.dumps(snap)) == snap
    assert pickle.loads(pickle.dumps(tree)) == tree
    assert type(snap.dropped) is dict


def test_stats_values_are_frozen() -> None:
    snap = Counters().snapshot(1, 0, False)
    with pytest.raises(AttributeError):
        snap.sent = 3  # type: ignore[misc]


def test_the_drops_mapping_answers_in_and_get_for_an_unknown_reason() -> None:
    drops = Counters().dropped
    assert "bored" not in drops
    assert drops.get("bored", 0) == 0
