"""The exit spill: what an exit path could not deliver in its budget goes to the spool.

Everything unsettled is taken from the queue under its lock (the batch on the wire first,
with its Idempotency-Key recorded as the spool's in-flight batch, then the held and waiting
events in order), written as one segment with one ``write``, and counted as ``spooled``. If
the batch on the wire is answered before the process is gone, it is settled in the spool
(``resolved_below`` moves past it) and counted as sent instead, so no adopter resends it.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

from zstream_mp._queue import EventQueue
from zstream_mp._recovery import spool as _spool
from zstream_mp._stream_context import Destination

logger = logging.getLogger("zstream_mp")


class Spill:
    """The spool directory of one process's exit spills (made on the first one)."""

    def __init__(self, name: str | None) -> None:
        self.name = name or f"p{os.getpid()}-{secrets.token_hex(4)}"
        self.directory: str | None = None
        self.page: _spool.StatePage | None = None
        self.dests: list[Destination] = []
        self.next_seq = 0

    def _dest_index(self, dest: Destination) -> int:
        for i, known in enumerate(self.dests):
            if known is dest or known == dest:
                return i
        self.dests.append(dest)
        return len(self.dests) - 1

    def _dest_records(self) -> list[dict[str, Any]]:
        from zstream_mp import _handoff

        return [
            _spool.dest_record(
                d.run_id, d.server, _handoff.token_file_of(d.token) if d.token else None
            )
            for d in self.dests
        ]

    def spill(self, queue: EventQueue, budget: float) -> int:
        """Move every unsettled event of ``queue`` to the spool; how many were moved."""
        with queue.lock:
            posting, groups = queue.take_unsettled()
            records: list[tuple[int, bytes]] = []
            inflight: tuple[int, int, str] | None = None
            if posting is not None:
                dest, events, key = posting
                idx = self._dest_index(dest)
                first = self.next_seq
                inflight = (first, first + len(events) - 1, key)
                records.extend((idx, e) for e in events)
            for dest, events in groups:
                idx = self._dest_index(dest)
                records.extend((idx, e) for e in events)
            if not records:
                return 0
            first_seq = self.next_seq
            try:
                if self.directory is None:
                    self.directory = os.path.join(_spool.spool_root(), self.name)
                    _spool.ensure_dir(self.directory)
                    self.page = _spool.StatePage(os.path.join(self.directory, "state"), create=True)
                _spool.write_dests(self.directory, self._dest_records())
                assert self.page is not None
                if inflight is not None:
                    self.page.set_inflight(*inflight)
                _spool.write_segment(self.directory, first_seq, records)
            except OSError as exc:
                queue.counters.dropped["failed"] += len(records)
                logger.warning(
                    "Could not deliver %d events within the exit budget (%.1f s) "
                    "and could not spool them (%s); they are lost",
                    len(records),
                    budget,
                    exc,
                )
                return 0
            self.next_seq = first_seq + len(records)
            queue.counters.spooled += len(records)
            if inflight is not None:
                queue.settle_spilled = self._settler(queue, inflight)
        logger.warning(
            "Could not deliver %d events within the exit budget (%.1f s); "
            "spooled them to %s, to be delivered by the parent, the next publisher or "
            "`zstream-mp spool drain`",
            len(records),
            budget,
            self.directory,
        )
        return len(records)

    def _settler(self, queue: EventQueue, inflight: tuple[int, int, str]) -> Any:
        page = self.page

        def settle(delivered: bool, n: int) -> None:  # called under the queue lock
            if not delivered or page is None or page.resolved_below != inflight[0]:
                return
            page.resolve(inflight[1] + 1)
            queue.counters.spooled -= n
            queue.counters.sent += n

        return settle
