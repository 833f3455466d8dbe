"""The recovery wing: what the publisher keeps on disk so that nothing is lost on the way out.

The modules, in the order an event that could not be delivered meets them:

* `statedir`: the private per-user directory everything below lives in;
* `liveness`: process identity that survives PID reuse (pid, start time, boot id);
* `registry`: one entry per publishing process, with its live counters;
* `spool`: the on-disk format of kept events and their state page;
* `spill`: a process moves what it cannot deliver now into its own spool;
* `durable`: durable mode's queue, which *is* the spool;
* `landed`: was a batch in flight when its sender stopped stored after all?
* `adopt`: resuming a spool, by its owner or, once the owner is gone, by anyone;
* `tree`: a parent's wait for its descendants, adopting what the dead ones left.

Who writes, reads and removes each file (under the state dir; 0600 files, 0700 dirs):

* `procs/p<pid>-<iid>.json` and `.ctr` (identity; live counters, mmap): written by the
  process at its first publish or bind; read by tree flushes, `stats`, adopters and the
  sweep; removed by the sweep once the process is dead (one that exited cleanly after
  `SWEEP_GRACE`).
* `spool/p<pid>-<iid>/` (kept events and their state page): written by the spill or the
  durable queue; read by its owner while it lives, then by one deliverer at a time;
  removed by the deliverer that settles it, by the sweep (settled, or undelivered for
  48 h) and by `spool discard`.
* `ctx-<pid>.json` (the context a process hands down): written by `bind()` or a
  step's export; read by children, also those started before the bind; removed by its
  origin at exit when no descendant lives, else by the sweep.
* `servers/dedup-<sha256>` (a server said it honours the Idempotency-Key): written
  and removed by senders once per server per process; read by deliverers; ignored after
  a day.
* `token-<sha256>` (a credential, never in an environment or a spool): written by
  `bind(token=)` and by a spill or durable queue whose events carry a token; read by
  children, deliverers and `spool drain`, only from this directory; removed by the
  sweep once no live process, live ctx file, environment or unsettled spool names it.

The rest of the package uses this façade (`flush_tree`, `adopt_descendants`,
`maintain_soon`, `sweep`, `drain`, `spools`, `discard`, the rows for `stats`);
a process's state is built from `registry`, `spill` and `durable` directly, and the
context wing reads `statedir` and `liveness`: nothing else reaches inside.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from zstream_mp._recovery import adopt as _adopt
from zstream_mp._recovery import liveness as _liveness
from zstream_mp._recovery import registry as _registry
from zstream_mp._recovery import spool as _spool
from zstream_mp._recovery.adopt import Adopted, maintain_soon
from zstream_mp._recovery.liveness import start_of
from zstream_mp._recovery.spool import note_deduplicating
from zstream_mp._recovery.tree import adopt_descendants, flush_tree, rows, tree_stats
from zstream_mp._settings import env_token_for
from zstream_mp._stats import ProcessRow

__all__ = [
    "Adopted",
    "DrainReport",
    "SpoolRow",
    "adopt_descendants",
    "discard",
    "drain",
    "flush_tree",
    "maintain_soon",
    "note_deduplicating",
    "process_rows",
    "rows",
    "spools",
    "start_of",
    "sweep",
    "tree_stats",
]


def process_rows() -> list[ProcessRow]:
    """A row for every publishing process on this host that the registry knows."""
    return [found.row() for found in _registry.scan()]


def sweep() -> int | None:
    """Remove what dead processes left and nothing references; None when busy elsewhere."""
    return _registry.sweep()


@dataclass
class DrainReport:
    sent: int = 0
    dropped: int = 0
    complete: bool = True
    refused: int | None = None


def drain(deadline: float, *, token: str | None = None, server: str | None = None) -> DrainReport:
    """Deliver every spool whose owner is gone (`server`'s only, when given), then sweep.

    `token` replaces the credentials the spools name.
    """
    report = DrainReport()
    wanted = server.rstrip("/") if server else None

    def only(spool: _spool.SpoolDir) -> bool:
        return wanted is None or any(
            d.get("server") == wanted for d in _spool.read_dests(spool.path)
        )

    def count(result: _adopt.Adopted) -> None:
        report.sent += result.sent
        report.dropped += result.dropped
        report.refused = report.refused or result.refused

    report.complete = _adopt.adopt_all(
        deadline, only=only, on_result=count, token=token, token_for=env_token_for
    )
    sweep()
    return report


@dataclass
class SpoolRow:
    """One spool on this host, as `spool ls` shows it."""

    path: str
    owner: int
    unsettled: int
    adoptable: bool
    reason: str
    destinations: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "owner": self.owner,
            "unsettled": self.unsettled,
            "adoptable": self.adoptable,
            "reason": self.reason,
            "destinations": self.destinations,
        }


def spools() -> list[SpoolRow]:
    """Every spool with unsettled events, and why it is still there."""
    rows = []
    with contextlib.suppress(OSError):
        for spool in _spool.list_spools():
            n = _spool.count_pending(spool.path)
            if not n:
                continue
            adoptable = _adopt.adoptable(spool)
            if adoptable:
                reason = _adopt.last_attempt(spool.path) or "owner gone: waiting for a deliverer"
            elif spool.claimer is not None and _liveness.is_alive(*spool.claimer):
                reason = f"being delivered by pid {spool.claimer[0]}"
            else:
                reason = f"owner pid {spool.owner_pid} is alive and delivers it itself"
            dests = [
                {"server": d.get("server"), "run_id": d.get("run_id")}
                for d in _spool.read_dests(spool.path)
            ]
            rows.append(SpoolRow(spool.path, spool.owner_pid, n, adoptable, reason, dests))
    return rows


def discard(row: SpoolRow) -> bool:
    """Remove the spool of `row` if its owner is gone and nobody delivers it."""
    for spool in _spool.list_spools():
        if spool.path == row.path and _adopt.adoptable(spool):
            claimed = _spool.claim(spool)
            if claimed is not None and os.path.isdir(claimed):
                _spool.remove(claimed)
                return True
    return False
