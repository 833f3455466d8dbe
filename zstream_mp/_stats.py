"""Counters of one process's publisher, and the typed snapshot ``stats()`` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DROP_REASONS = ("overflow", "oversize", "rejected", "failed", "no_context", "muted")


@dataclass(frozen=True)
class PublisherStats:
    """What this process's publisher has done since it started (or since its fork).

    ``published`` counts events accepted into the queue; every one of them ends up in
    ``sent``, in ``queued`` (still waiting or in flight) or in a ``dropped`` reason.
    ``no_context`` and ``oversize`` count events refused before the queue.
    """

    pid: int
    published: int
    sent: int
    queued: int
    batches: int
    retries: int
    muted: bool
    dropped: Mapping[str, int] = field(default_factory=dict)
    last_failure: str | None = None
    """The latest failed delivery attempt or dropped batch, as ``"<server>: <reason>"``."""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class Counters:
    """Mutable counters, updated under the queue's lock (or by the single sender thread)."""

    __slots__ = ("batches", "dropped", "published", "retries", "sent")

    def __init__(self) -> None:
        self.published = 0
        self.sent = 0
        self.batches = 0
        self.retries = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    def snapshot(
        self, pid: int, queued: int, muted: bool, last_failure: str | None = None
    ) -> PublisherStats:
        return PublisherStats(
            pid=pid,
            published=self.published,
            sent=self.sent,
            queued=queued,
            batches=self.batches,
            retries=self.retries,
            muted=muted,
            dropped=MappingProxyType(dict(self.dropped)),
            last_failure=last_failure,
        )
