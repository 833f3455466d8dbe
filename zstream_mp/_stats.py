"""Counters of one process's publisher, their shared page layout, and the stats values.

The counters live in a page of int64 slots. For a registered process that page is the
registry's memory-mapped counter file, so other processes (a tree flush, `zstream-mp
stats`) read them live and they survive SIGKILL; otherwise it is a private buffer. An
update is one 8-byte store into the page: no lock file and no system call.

`PublisherStats`, `ProcessRow` and `TreeStats` are plain frozen values with plain
`dict`/`tuple` fields, so they pickle (a pool worker can return them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

DROP_REASONS = (
    "overflow",
    "oversize",
    "rejected",
    "failed",
    "no_context",
    "muted",
    "spool_full",
)
QUEUE_DROPS = ("overflow", "rejected", "failed", "muted", "spool_full")
"""Drops of events that had been counted as published (the rest are refused before it)."""

PAGE_SIZE = 4096
MAGIC = 0x315247455253545A  # "ZSTSREG1", little-endian
# slot numbers (int64 each)
S_MAGIC = 0
S_PUBLISHED = 1
S_SENT = 2
S_BATCHES = 3
S_RETRIES = 4
S_SPOOLED = 5
"""Events this process left in its spool (exit spill, or durable backlog at death)."""
S_SPOOL_SENT = 6
"""Events of this process's spool that an adopter delivered."""
S_SPOOL_DROPPED = 7
"""Events of this process's spool that an adopter could not deliver (refused, failed)."""
S_ADOPTED = 8
"""Events of other processes' spools that this process delivered."""
S_FLAGS = 9
S_DROPPED = 16
"""First of `len(DROP_REASONS)` drop slots."""
N_SLOTS = S_DROPPED + len(DROP_REASONS)

F_MUTED = 1
F_EXITED = 2
"""The exit hook ran to its end."""
F_DURABLE = 4


# The slot of each drop reason: an unknown reason is a KeyError, as a mapping's is.
_DROP_SLOT = {reason: S_DROPPED + i for i, reason in enumerate(DROP_REASONS)}


class _Drops(MutableMapping[str, int]):
    """`counters.dropped[reason] += n` writes straight into the page."""

    __slots__ = ("_slots",)

    def __init__(self, slots: memoryview) -> None:
        self._slots = slots

    def __getitem__(self, reason: str) -> int:
        return int(self._slots[_DROP_SLOT[reason]])

    def __setitem__(self, reason: str, value: int) -> None:
        self._slots[_DROP_SLOT[reason]] = value

    def __delitem__(self, reason: str) -> None:
        raise TypeError("drop reasons cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(DROP_REASONS)

    def __len__(self) -> int:
        return len(DROP_REASONS)


def _slot(slot: int) -> Any:
    """A property reading and writing one slot of the page."""

    def get(self: Counters) -> int:
        return int(self.slots[slot])

    def put(self: Counters, value: int) -> None:
        self.slots[slot] = value

    return property(get, put)


class Counters:
    """Mutable counters over a page of int64 slots (the registry's mmap, or private memory).

    Updated under the queue's lock, or by the single sender thread.
    """

    __slots__ = ("dropped", "slots")

    def __init__(self, page: Any = None) -> None:
        buffer = page if page is not None else bytearray(PAGE_SIZE)
        self.slots = memoryview(buffer).cast("B").cast("q")
        self.slots[S_MAGIC] = MAGIC
        self.dropped = _Drops(self.slots)

    published = _slot(S_PUBLISHED)
    sent = _slot(S_SENT)
    batches = _slot(S_BATCHES)
    retries = _slot(S_RETRIES)
    spooled = _slot(S_SPOOLED)
    adopted = _slot(S_ADOPTED)
    flags = _slot(S_FLAGS)

    def snapshot(
        self, pid: int, queued: int, muted: bool, last_failure: str | None = None
    ) -> PublisherStats:
        slots = list(self.slots[:N_SLOTS])
        stats = stats_from_slots(pid, slots, queued=queued, muted=muted)
        return dataclasses.replace(stats, last_failure=last_failure) if last_failure else stats


@dataclass(frozen=True)
class PublisherStats:
    """What one process's publisher has done since it started (or since its fork).

    `published` counts events accepted into the queue; every one of them ends up in
    `sent`, in `queued` (still waiting or in flight), in `spooled` (left in the spool
    for an adopter to deliver) or in a `dropped` reason. `no_context` and `oversize`
    count events refused before the queue. `adopted` counts other processes' spooled
    events this process delivered.
    """

    pid: int
    published: int
    sent: int
    queued: int
    batches: int
    retries: int
    muted: bool
    dropped: Mapping[str, int] = field(default_factory=dict)
    spooled: int = 0
    spool_sent: int = 0
    adopted: int = 0
    durable: bool = False
    last_failure: str | None = None
    """The latest failed delivery attempt or dropped batch, as `"<server>: <reason>"`
    (this process only: other processes' failures are not in the registry)."""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def stats_from_slots(
    pid: int, slots: list[int], *, queued: int | None = None, muted: bool | None = None
) -> PublisherStats:
    """A `PublisherStats` from a page's slots; `queued` derived when not given."""
    dropped = {r: int(slots[S_DROPPED + i]) for i, r in enumerate(DROP_REASONS)}
    flags = slots[S_FLAGS]
    if queued is None:
        resolved = slots[S_SENT] + slots[S_SPOOLED] + sum(dropped[r] for r in QUEUE_DROPS)
        queued = max(0, slots[S_PUBLISHED] - resolved)
    return PublisherStats(
        pid=pid,
        published=int(slots[S_PUBLISHED]),
        sent=int(slots[S_SENT]),
        queued=queued,
        batches=int(slots[S_BATCHES]),
        retries=int(slots[S_RETRIES]),
        muted=bool(flags & F_MUTED) if muted is None else muted,
        dropped=dropped,
        spooled=int(slots[S_SPOOLED]),
        spool_sent=int(slots[S_SPOOL_SENT]),
        adopted=int(slots[S_ADOPTED]),
        durable=bool(flags & F_DURABLE),
    )


@dataclass(frozen=True)
class ProcessRow:
    """One registered process as another process sees it."""

    pid: int
    iid: str
    state: str
    """`alive`, `exited` (its exit hook finished) or `dead` (killed, or left early)."""
    runs: tuple[str, ...]
    stats: PublisherStats
    spool_pending: int
    """Spooled events not yet delivered by an adopter (`spooled - spool_sent - dropped`)."""

    @property
    def delivered(self) -> bool:
        """Everything it published is on the server or dropped by policy."""
        s = self.stats
        return self.spool_pending == 0 and (s.queued == 0 or self.state != "alive")


@dataclass(frozen=True)
class TreeStats:
    """Counters of a process tree or of a run on this host, with a row per process."""

    scope: str
    root: int | None
    run_id: str | None
    processes: tuple[ProcessRow, ...]

    def _sum(self, name: str) -> int:
        return sum(int(getattr(p.stats, name)) for p in self.processes)

    @property
    def published(self) -> int:
        return self._sum("published")

    @property
    def sent(self) -> int:
        return self._sum("sent")

    @property
    def queued(self) -> int:
        return self._sum("queued")

    @property
    def spooled(self) -> int:
        return self._sum("spooled")

    @property
    def spool_sent(self) -> int:
        return self._sum("spool_sent")

    @property
    def spool_pending(self) -> int:
        return sum(p.spool_pending for p in self.processes)

    @property
    def dropped(self) -> dict[str, int]:
        return {r: sum(p.stats.dropped.get(r, 0) for p in self.processes) for r in DROP_REASONS}

    @property
    def spooled_share(self) -> float:
        """The fraction of published events that went through a spool."""
        published = self.published
        return self.spooled / published if published else 0.0
