"""Durable mode: the queue is the spool, so a process killed at any instant loses nothing.

`publish()` appends each event to an mmap'd segment of the process's spool (`_spool`
layout) and commits it by advancing the segment's end, a few stores into the page cache:
no `fsync` (that would be per-event milliseconds), so SIGKILL, `os._exit` and the OOM
killer lose nothing `publish()` returned from; a power loss or kernel crash may. The
sender reads batches back from the mapped segments, records each one's range and
Idempotency-Key in the state page before its POST, and settles it after; fully settled
segments are unlinked. When the process dies, its parent or a later publisher adopts the
rest (`_adopt`).

Memory holds no events, so the 4,096-event queue limit does not apply; the spool's own cap
(`ZSTREAM_SPOOL_MAX_BYTES`, 64 MiB by default) does, and an event past it is dropped and
counted as `spool_full`.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
from typing import Any

from zstream_mp._queue import EventQueue, Group, Queued, Settle, SpillWriter
from zstream_mp._recovery import spool as _spool
from zstream_mp._recovery.registry import ProcessEntry
from zstream_mp._stats import Counters

logger = logging.getLogger("zstream_mp")

SEGMENT_BYTES = 4 << 20
_pack_record = _spool.RECORD.pack_into
_pack_commit = _spool.COMMIT.pack_into
_unpack_record = _spool.RECORD.unpack_from
_RECORD_SIZE = _spool.RECORD.size


class _Segment:
    __slots__ = ("first_seq", "map", "path")

    def __init__(self, directory: str, first_seq: int) -> None:
        self.first_seq = first_seq
        self.path = os.path.join(directory, _spool.segment_name(first_seq))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            _spool.allocate(fd, SEGMENT_BYTES)
            self.map = mmap.mmap(fd, SEGMENT_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        finally:
            os.close(fd)
        self.map[0:8] = _spool.SEG_MAGIC
        _pack_commit(self.map, 8, _spool.SEG_HEADER)
        _pack_commit(self.map, 16, first_seq)


class DurableQueue(EventQueue):
    durable = True

    def __init__(self, entry: ProcessEntry, counters: Counters, max_bytes: int) -> None:
        super().__init__(0, counters)
        self.directory = entry.spool_dir()
        self.iid = entry.name.partition("-")[2]
        _spool.ensure_dir(self.directory)
        self.page = _spool.StatePage(os.path.join(self.directory, "state"), create=True)
        self.max_segments = max(1, max_bytes // SEGMENT_BYTES)
        self.dests: list[Any] = []
        self.deduplicating: set[str] = set()
        self._dest_cache: tuple[Any, int] | None = None
        self.segments: list[_Segment] = [_Segment(self.directory, 0)]
        self._off = _spool.SEG_HEADER
        self.seq = 0
        self.read_seq = 0
        self._read_seg = 0
        self._read_off = _spool.SEG_HEADER
        self._taken: tuple[int, int] | None = None
        self._taken_from = (0, 0, _spool.SEG_HEADER)
        self._left = False
        self._full_said = False

    # ------------------------------------------------------------------ writing (publish)

    def _dest_index(self, dest: Any) -> int:
        cached = self._dest_cache
        if cached is not None and cached[0] is dest:
            return cached[1]
        found = next((i for i, d in enumerate(self.dests) if d is dest or d == dest), None)
        if found is not None:
            i = found
        else:
            self.dests.append(dest)
            i = len(self.dests) - 1
            _spool.write_dests(self.directory, self.dests, self.deduplicating)
        self._dest_cache = (dest, i)
        return i

    def append(self, dest: Any, event: bytes) -> bool:
        with self._lock:
            if self._muted:
                self._counters.dropped["muted"] += 1
                return False
            self._append_locked(dest, event)
            return not self._taker

    def _append_locked(self, dest: Any, event: bytes) -> None:
        idx = self._dest_index(dest)
        n = len(event)
        seg = self.segments[-1]
        off = self._off
        end = off + _RECORD_SIZE + n
        if end > SEGMENT_BYTES:
            fresh = self._next_segment()
            if fresh is None:
                self._counters.published += 1
                self._counters.dropped["spool_full"] += 1
                return
            seg = fresh
            off = _spool.SEG_HEADER
            end = off + _RECORD_SIZE + n
        m = seg.map
        _pack_record(m, off, n, idx, 0, self.seq)
        m[off + _RECORD_SIZE : end] = event
        _pack_commit(m, 8, end)  # the commit point
        self._off = end
        self.seq += 1
        self._counters.published += 1
        if self._taker_waiting:  # once, as in `EventQueue.append`
            self._taker_waiting = False
            self._has_work.notify()

    def _next_segment(self) -> _Segment | None:
        """A new segment, or None when the cap is reached or the disk refuses one."""
        if len(self.segments) >= self.max_segments:
            reason = f"the spool cap ({self.max_segments * SEGMENT_BYTES >> 20} MiB) is reached"
        else:
            try:
                seg = _Segment(self.directory, self.seq)
            except OSError as exc:
                reason = f"no room for a new segment ({exc.strerror or exc})"
            else:
                self.segments.append(seg)
                return seg
        if not self._full_said:
            self._full_said = True
            logger.warning(
                "The durable spool %s cannot grow: %s; new events are dropped (counted as "
                "spool_full) until the sender catches up",
                self.directory,
                reason,
            )
        return None

    def server_deduplicates(self, server: str) -> None:
        """Mark `server`'s events in the spool as resendable without a check."""
        with self._lock:
            self.deduplicating.add(server)
            with contextlib.suppress(OSError):
                _spool.write_dests(self.directory, self.dests, self.deduplicating)

    # ------------------------------------------------------------------ reading (sender)

    def _waiting(self) -> int:
        return 0 if self._left else self.seq - self.read_seq

    def take(self, limit: int, idle: float, max_bytes: int | None = None) -> list[Queued] | None:
        with self._lock:
            if not self._waiting():
                self._taker_waiting = True
                try:
                    self._has_work.wait(idle)
                finally:
                    self._taker_waiting = False
                if not self._waiting():
                    return None
            batch: list[Queued] = []
            first = self.read_seq
            start_seg, start_off = self._read_seg, self._read_off
            first_dest = -1
            size = 0
            while self.read_seq < self.seq and len(batch) < limit:
                seg = self.segments[self._read_seg]
                committed = _spool.COMMIT.unpack_from(seg.map, 8)[0]
                if self._read_off >= committed:
                    self._read_seg += 1
                    self._read_off = _spool.SEG_HEADER
                    continue
                n, idx, _, _seq = _unpack_record(seg.map, self._read_off)
                if batch and idx != first_dest:
                    break  # one destination per batch: its seq range is contiguous
                if batch and max_bytes is not None and size + n >= max_bytes:
                    break
                size += n + 1
                start = self._read_off + _RECORD_SIZE
                batch.append((self.dests[idx], seg.map[start : start + n]))
                first_dest = idx
                self._read_off = start + n
                self.read_seq += 1
            self._taken = (first, self.read_seq - 1)
            self._taken_from = (first, start_seg, start_off)
            self._in_flight = len(batch)
            return batch

    def retry_later(self) -> bool:
        """Nothing durable is given up: the batch is read again by the next `take`."""
        with self._lock:
            if self._taken is None or self._left:
                return False
            self.read_seq, self._read_seg, self._read_off = self._taken_from
            self._taken = None
            self._posting = None
            return True

    def _batch_key(self, group: Group) -> str | None:
        taken = self._taken
        if taken is None:
            return None
        key = _spool.batch_key(self.iid, *taken)
        self.page.set_inflight(taken[0], taken[1], key)  # before the POST
        return key

    def done(self) -> None:
        with self._lock:
            taken, self._taken = self._taken, None
            if taken is not None and not self._left:
                self.page.resolve(taken[1] + 1)
                self._free_settled()
            self._in_flight = 0
            self._drained.notify_all()

    def _free_settled(self) -> None:
        while self._read_seg > 0 and len(self.segments) > 1:
            seg = self.segments.pop(0)
            self._read_seg -= 1
            with contextlib.suppress(OSError):
                os.unlink(seg.path)
            with contextlib.suppress(BufferError, ValueError):
                seg.map.close()

    def _discard_waiting(self) -> None:
        self.read_seq = self.seq
        self._read_seg = len(self.segments) - 1
        self._read_off = self._off
        if self._taken is None:
            self.page.resolve(self.seq)

    # ------------------------------------------------------------------ exit

    def leave_for_adoption(self, why: str) -> int:
        """This process stops sending (its exit budget ran out, or the server refused its
        credentials): what is unsettled, and anything published later, stays in the spool
        for whoever delivers it after this process is gone."""
        with self._lock:
            if self._left:
                return 0
            taken = self._taken
            n = self.seq - self.page.resolved_below
            self._left = True
            self._in_flight = 0
            self._counters.spooled += n
            if taken is not None:
                self._settle_spilled = self._settler(taken)
            self._drained.notify_all()
        logger.warning(
            "%s: %d events stay in the durable spool %s, to be delivered once this process "
            "is gone by its parent, a later publisher or `zstream-mp spool drain`",
            why,
            n,
            self.directory,
        )
        return n

    def _settler(self, taken: tuple[int, int]) -> Settle:
        def settle(delivered: bool) -> bool:  # under the queue lock
            if delivered and self.page.resolved_below == taken[0]:
                self.page.resolve(taken[1] + 1)
                return True
            return False

        return settle

    def remove_if_settled(self) -> None:
        """At a clean exit: nothing is left to adopt, so the spool goes."""
        with self._lock:
            if not self._left and self.page.resolved_below >= self.seq and not self._in_flight:
                _spool.remove(self.directory)

    def spill_with(self, writer: SpillWriter, only_posting: bool = False) -> int:
        """Nothing to move: every event is in the spool from `publish()` on."""
        return 0
