"""The spill: what a process could not deliver goes to its own spool, in order, exactly once.

Three moments spill, each under the queue's lock:

* an exit path runs out of budget (`spill_unsettled`): the batch on the wire first, with
  its Idempotency-Key recorded as the spool's in-flight batch, then the held and waiting
  events in order;
* a `flush(timeout)` gives up (`spill_unsettled` too): what it waited for is on disk
  before it returns, so an `os._exit` next loses nothing;
* the server answers 401 or 403 (`spill_posting`): the batch is kept for a later attempt
  with valid credentials instead of being thrown away.

Each spill is one segment written with one `write` and counted as `spooled`. If the batch
on the wire is answered before the process is gone, it is settled in the spool
(`resolved_below` moves past it) and counted as sent, so no adopter resends it. While the
process lives, its sender delivers its own spool before anything newer (`resume`), so the
order per producer holds; when it is gone, an adopter does (`adopt`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

from zstream_mp._deadline import acquire_until
from zstream_mp._queue import Group, Posting, Queue, Settle, Spilled
from zstream_mp._recovery import adopt as _adopt
from zstream_mp._recovery import spool as _spool
from zstream_mp._stream_context import Destination
from zstream_mp._transport import Transport

logger = logging.getLogger("zstream_mp")

REPEAT_SECONDS = 30.0
"""A spill that goes on (every batch refused with 401) is logged once per this many seconds."""
RESUME_BACKOFF = 30.0
"""Seconds a live process waits before it tries its own spool again after a failed try."""


class Spill:
    """The spool directory of one process's spills (made on the first one)."""

    def __init__(self, name: str | None, max_bytes: int) -> None:
        self.name = name or f"p{os.getpid()}-{secrets.token_hex(4)}"
        self.iid = self.name.partition("-")[2]
        self.max_bytes = max_bytes
        self.directory: str | None = None
        self.page: _spool.StatePage | None = None
        self.dests: list[Destination] = []
        self.deduplicating: set[str] = set()
        self.next_seq = 0
        self.bytes_written = 0
        self.resume_after = 0.0
        self._said = -REPEAT_SECONDS
        self.awaiting_verdict = False
        """The batch recorded in flight is still on the wire in this process's sender: only
        its verdict settles it (resending it now could store it twice)."""
        self._resuming = threading.Lock()

    # ------------------------------------------------------------------ writing

    def spill_unsettled(
        self, queue: Queue, why: str, maybe_landed: bool = True, final: bool = False
    ) -> int:
        """Move every unsettled event of `queue` to the spool; how many were moved.

        `maybe_landed`: whether the batch on the wire may reach the server (it is then
        recorded in flight, for the deliverer to check before resending it). `final`:
        the process is leaving, so the warning (with the totals) is always logged.
        """
        return queue.spill_with(
            lambda posting, groups: self._write(posting, groups, why, maybe_landed, final)
        )

    def spill_posting(self, queue: Queue, why: str, maybe_landed: bool = False) -> int:
        """Move only the batch on the wire (refused, or failed with a 5xx that may have
        stored it: `maybe_landed`) to the spool."""
        return queue.spill_with(
            lambda posting, groups: self._write(posting, groups, why, maybe_landed, False),
            only_posting=True,
        )

    def _write(
        self,
        posting: Posting | None,
        groups: list[Group],
        why: str,
        maybe_landed: bool,
        final: bool,
    ) -> Spilled:
        """Write one segment (under the queue's lock, handed by `spill_with`)."""
        records: list[tuple[int, bytes]] = []
        inflight: tuple[int, int, str] | None = None
        first_seq = self.next_seq
        if posting is not None:
            dest, events, key = posting
            if maybe_landed:
                inflight = (first_seq, first_seq + len(events) - 1, key)
            idx = self._dest_index(dest)
            records.extend((idx, e) for e in events)
        for dest, events in groups:
            idx = self._dest_index(dest)
            records.extend((idx, e) for e in events)
        if not records:
            return Spilled()
        size = sum(len(e) + _spool.RECORD.size for _, e in records)
        try:
            if self.bytes_written + size > self.max_bytes:
                raise OSError(f"the spool cap of {self.max_bytes >> 20} MiB is reached")
            directory = self._ensure_dir()
            _spool.write_dests(directory, self.dests, self.deduplicating)
            if inflight is not None:
                assert self.page is not None
                self.page.set_inflight(*inflight)
            _spool.write_segment(directory, first_seq, records)
        except OSError as exc:
            logger.warning(
                "%s: %d events could not be spooled either (%s); they are lost",
                why,
                len(records),
                exc.strerror or exc,
            )
            return Spilled(lost=len(records))
        self.next_seq = first_seq + len(records)
        self.bytes_written += size
        now = time.monotonic()
        level = logging.WARNING
        if not final and now - self._said < REPEAT_SECONDS:
            level = logging.DEBUG  # a spill that goes on: one line every REPEAT_SECONDS
        else:
            self._said = now
        logger.log(
            level,
            "%s: %d events kept in the spool %s (%d kept there so far); the next attempt "
            "is made by this process, its parent, a later publisher or `zstream-mp spool drain`",
            why,
            len(records),
            self.directory,
            self.next_seq,
        )
        settle = self._settler(inflight) if inflight is not None else None
        return Spilled(kept=len(records), settle=settle)

    def server_deduplicates(self, server: str) -> None:
        """Mark `server`'s events in the spool as resendable without a check."""
        self.deduplicating.add(server)
        if self.directory is not None:
            with contextlib.suppress(OSError):
                _spool.write_dests(self.directory, self.dests, self.deduplicating)

    def _ensure_dir(self) -> str:
        if self.directory is None:
            directory = os.path.join(_spool.spool_root(), self.name)
            _spool.ensure_dir(directory)
            self.page = _spool.StatePage(os.path.join(directory, "state"), create=True)
            self.directory = directory
        return self.directory

    def _dest_index(self, dest: Destination) -> int:
        for i, known in enumerate(self.dests):
            if known is dest or known == dest:
                return i
        self.dests.append(dest)
        return len(self.dests) - 1

    def _settler(self, inflight: tuple[int, int, str]) -> Settle:
        page = self.page
        self.awaiting_verdict = True

        def settle(delivered: bool) -> bool:  # called under the queue lock
            self.awaiting_verdict = False
            if not delivered or page is None or page.resolved_below != inflight[0]:
                return False
            page.resolve(inflight[1] + 1)
            return True

        return settle

    # ------------------------------------------------------------------ delivering

    def pending(self) -> bool:
        """Events of this process's own spool that are not settled yet."""
        page = self.page
        return page is not None and page.resolved_below < self.next_seq

    def due(self) -> bool:
        """Worth a try now: something is pending, nothing of it is still on the wire and
        no recent try failed."""
        return (
            self.pending() and not self.awaiting_verdict and time.monotonic() >= self.resume_after
        )

    def resume(
        self, transport: Transport, deadline: float, token_for: Callable[[str], str | None]
    ) -> _adopt.Adopted:
        """Deliver this process's own spool, oldest first, until `deadline`."""
        if self.directory is None or self.page is None:
            return _adopt.Adopted()
        if not acquire_until(self._resuming, deadline):
            return _adopt.Adopted(complete=False)
        try:
            result = _adopt.deliver(
                self.directory, self.page, self.iid, deadline, transport, token_for=token_for
            )
        finally:
            self._resuming.release()
        if not result.complete:
            self.resume_after = time.monotonic() + RESUME_BACKOFF
        return result
