"""The per-PID registry: who publishes on this host, and their live counters.

`<state dir>/procs/` holds, per publishing process, `p<pid>-<iid>.json` (its identity:
pid, start time and boot id, which survive PID reuse; its ancestors; its runs; the handoff
token files it relies on) and `p<pid>-<iid>.ctr`, the page of counters (`_stats`) the
process updates in place through `mmap`: other processes read them live, and they survive
SIGKILL. The entry is made on the process's first publish (so a tree flush cannot miss an
event published a moment earlier), never inherited by a forked child (whose first publish
makes its own, with a new `iid`), and after that `publish()` touches only the mapped
page: no lock file, no system call.

The sweep (`sweep()`) removes the entries and files of dead processes. It runs under a
non-blocking `filelock`: when another process is sweeping, it skips.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from zstream_mp import _handoff
from zstream_mp._forksafe import on_fork_in_child
from zstream_mp._recovery import liveness as _liveness
from zstream_mp._recovery import spool as _spool
from zstream_mp._recovery.statedir import read_private, state_dir, subdir, write_private
from zstream_mp._stats import (
    F_EXITED,
    N_SLOTS,
    PAGE_SIZE,
    S_FLAGS,
    S_SPOOL_DROPPED,
    S_SPOOL_SENT,
    S_SPOOLED,
    ProcessRow,
    stats_from_slots,
)
from zstream_mp._wire import ENV_CONTEXT

logger = logging.getLogger("zstream_mp")

VERSION = 1
SWEEP_GRACE = 60.0
"""Seconds an entry of a process that exited cleanly stays visible (for `stats`)."""
SPOOL_RETENTION = 48 * 3600.0
"""Seconds an undeliverable spool of a dead process is kept (its server may be gone)."""


class ProcessEntry:
    """This process's own entry."""

    def __init__(self, directory: str, name: str, page: mmap.mmap, identity: dict[str, Any]):
        self.directory = directory
        self.name = name
        self.page = page
        self.identity = identity
        self.runs: set[str] = set()

    @property
    def iid(self) -> str:
        return str(self.identity["iid"])

    @property
    def json_path(self) -> str:
        return os.path.join(self.directory, self.name + ".json")

    def spool_dir(self) -> str:
        return os.path.join(_spool.spool_root(), self.name)

    def note_run(self, run_id: str, token_file: str | None) -> None:
        """Record a run this process publishes to (once per run: one small file write)."""
        if run_id in self.runs:
            return
        self.runs.add(run_id)
        self.identity["runs"] = sorted(self.runs)
        if token_file and token_file not in self.identity["token_files"]:
            self.identity["token_files"].append(token_file)
        self.write()

    def write(self) -> None:
        with contextlib.suppress(OSError):
            write_private(self.json_path, json.dumps(self.identity))


def register(durable: bool) -> ProcessEntry | None:
    """Make this process's entry; None (publishing goes on without it) when it cannot."""
    try:
        directory = subdir("procs")
        pid, start = _liveness.own_identity()
        iid = secrets.token_hex(4)
        name = f"p{pid}-{iid}"
        ctr = os.path.join(directory, name + ".ctr")
        fd = os.open(ctr, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            _spool.allocate(fd, PAGE_SIZE)
            page = mmap.mmap(fd, PAGE_SIZE)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(ctr)
            raise
        finally:
            os.close(fd)
        identity: dict[str, Any] = {
            "v": VERSION,
            "pid": pid,
            "iid": iid,
            "start": start,
            "boot": _liveness.boot_id(),
            "host": socket.gethostname(),
            "ancestors": _liveness.ancestors(),
            "origin": _handoff.origin_pid(os.environ.get(ENV_CONTEXT)),
            "runs": [],
            "token_files": [],
            "durable": durable,
            "created": time.time(),
        }
        entry = ProcessEntry(directory, name, page, identity)
        entry.write()
        return entry
    except OSError as exc:
        logger.warning(
            "zstream-mp runs without its registry entry in %s (%s): flush_tree(), stats "
            "and adoption will not see this process",
            _registry_dir_for_message(),
            exc,
        )
        return None


def _registry_dir_for_message() -> str:
    try:
        return state_dir()
    except OSError:
        return "the state dir"


# --------------------------------------------------------------------------- reading


def read_slots(path: str) -> list[int] | None:
    """The counters in a page, read until two reads agree (the writer never locks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        previous = None
        for _ in range(5):
            raw = os.pread(fd, N_SLOTS * 8, 0)
            if raw == previous:
                break
            previous = raw
        if previous is None or len(previous) < N_SLOTS * 8:
            return None
        return list(memoryview(previous).cast("q"))
    finally:
        os.close(fd)


@dataclass
class Found:
    """Another process's entry as read from the registry."""

    name: str
    identity: dict[str, Any]
    slots: list[int]
    spool: _spool.SpoolDir | None = None
    alive: bool = field(default=False)

    @property
    def pid(self) -> int:
        return int(self.identity["pid"])

    @property
    def start(self) -> int:
        return int(self.identity.get("start") or 0)

    @property
    def state(self) -> str:
        if self.alive:
            return "alive"
        return "exited" if self.slots[S_FLAGS] & F_EXITED else "dead"

    def descends_from(self, pid: int, start: int | None) -> bool:
        for a_pid, a_start in self.identity.get("ancestors") or ():
            if a_pid == pid and (start is None or a_start == start):
                return True
        return False

    def row(self) -> ProcessRow:
        stats = stats_from_slots(self.pid, self.slots)
        pending = self.slots[S_SPOOLED] - self.slots[S_SPOOL_SENT] - self.slots[S_SPOOL_DROPPED]
        if self.spool is not None and not self.alive and stats.queued:
            pending = max(pending, 0) + stats.queued  # a durable backlog awaiting adoption
            stats = stats_from_slots(self.pid, self.slots, queued=0)
        return ProcessRow(
            pid=self.pid,
            iid=str(self.identity.get("iid", "")),
            state=self.state,
            runs=tuple(self.identity.get("runs") or ()),
            stats=stats,
            spool_pending=max(0, pending),
        )


def procs_dir() -> str:
    return subdir("procs")


def scan() -> list[Found]:
    """Every readable entry, with its liveness and its spool (if any)."""
    try:
        directory = procs_dir()
        names = os.listdir(directory)
    except OSError:
        return []
    try:
        spools = {s.entry_name: s for s in _spool.list_spools()}
    except OSError:
        spools = {}
    out = []
    for name in names:
        if not name.endswith(".ctr"):
            continue
        base = name[:-4]
        slots = read_slots(os.path.join(directory, name))
        if slots is None:
            continue
        try:
            identity = json.loads(read_private(os.path.join(directory, base + ".json")))
        except (OSError, ValueError):
            identity = _identity_from_name(base)
            if identity is None:
                continue
        found = Found(base, identity, slots, spools.get(base))
        found.alive = _liveness.is_alive(found.pid, found.start, identity.get("boot"))
        out.append(found)
    return out


def _identity_from_name(base: str) -> dict[str, Any] | None:
    """An entry whose identity file is missing or torn: probe the PID from the name."""
    pid_s, _, iid = base[1:].partition("-")
    try:
        return {"pid": int(pid_s), "iid": iid, "start": None, "ancestors": [], "runs": []}
    except ValueError:
        return None


def add_to_slot(name: str, slot: int, n: int, *, absolute: bool = False) -> None:
    """Add `n` to (or set) a slot of another (dead) process's page: an adopter's books."""
    path = os.path.join(procs_dir(), name + ".ctr")
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            with mmap.mmap(fd, PAGE_SIZE) as page:
                view = memoryview(page).cast("q")
                view[slot] = n if absolute else view[slot] + n
                view.release()
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- sweeping


def sweep(grace: float = SWEEP_GRACE) -> int | None:
    """Remove entries, spools and handoff files of dead processes; None when busy elsewhere.

    An entry with an unsettled spool is kept for its adopter. Files of processes that
    exited cleanly stay `grace` seconds, so `stats` still shows them.
    """
    lock = FileLock(os.path.join(state_dir(), "registry.lock"), timeout=0, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return None
    try:
        removed = 0
        directory = procs_dir()
        now = time.time()
        referenced: set[str] = set()
        for found in scan():
            if found.alive:
                referenced.update(found.identity.get("token_files") or ())
                continue
            if found.spool is not None and _spool.count_pending(found.spool.path):
                if not _expired(found.spool.path, now):
                    referenced.update(found.identity.get("token_files") or ())
                    continue
                logger.warning(
                    "zstream-mp removes the spool %s: undelivered for %d hours",
                    found.spool.path,
                    SPOOL_RETENTION // 3600,
                )
            if found.state == "exited":
                with contextlib.suppress(OSError):
                    age = now - os.stat(os.path.join(directory, found.name + ".ctr")).st_mtime
                    if age < grace:
                        referenced.update(found.identity.get("token_files") or ())
                        continue
            for suffix in (".json", ".ctr"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, found.name + suffix))
                    removed += 1
            if found.spool is not None:
                _spool.remove(found.spool.path)
        removed += _sweep_orphan_spools()
        referenced.update(_tokens_of_unsettled_spools())
        removed += _handoff.sweep(state_dir(), referenced)
        return removed
    finally:
        lock.release()


def _expired(path: str, now: float) -> bool:
    try:
        return now - os.stat(path).st_mtime > SPOOL_RETENTION
    except OSError:
        return False


def _tokens_of_unsettled_spools() -> set[str]:
    """Token files that spools with events still to deliver name: their deliverer needs them."""
    out: set[str] = set()
    with contextlib.suppress(OSError):
        for spool in _spool.list_spools():
            if _spool.count_pending(spool.path):
                for dest in _spool.read_dests(spool.path):
                    if isinstance(dest.get("token_file"), str):
                        out.add(dest["token_file"])
    return out


def _sweep_orphan_spools() -> int:
    """Settled spools of dead owners whose entry is gone."""
    removed = 0
    with contextlib.suppress(OSError):
        entries = {n[:-4] for n in os.listdir(procs_dir()) if n.endswith(".ctr")}
        for spool in _spool.list_spools():
            if spool.entry_name in entries:
                continue
            if spool.claimer is not None and _liveness.is_alive(*spool.claimer):
                continue
            if not _spool.count_pending(spool.path):
                _spool.remove(spool.path)
                removed += 1
    return removed


def _after_fork_in_child() -> None:
    """The parent's entry stays the parent's: the child drops the cached identity (its
    process state, which holds the entry and its mapped page, is dropped by `process`)
    and makes its own entry, with a new `iid`, on its first publish."""
    _liveness.forget_identity()


on_fork_in_child("registry", _after_fork_in_child)
