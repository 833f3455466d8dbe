"""Process identity that survives PID reuse, and a fail-closed liveness test.

An identity is (pid, start, boot): `start` is the kernel's start time of the process in
clock ticks since boot (`/proc/<pid>/stat` field 22), `boot` the kernel's boot id. A PID
that is alive with another start time is a recycled PID, so its old owner is dead. Where
procfs is missing, `start` falls back to psutil's `create_time()` in milliseconds, and
two values within a second are taken as the same process.

Fail-closed: a process is declared dead only on proof (no such PID, a different start, a
zombie). An identity from another boot or host cannot be probed here and counts as alive.
"""

from __future__ import annotations

import os
import socket

import psutil

_boot: str | None = None
_self: tuple[int, int] | None = None
HAS_PROCFS = os.path.exists("/proc/self/stat")


def boot_id() -> str:
    global _boot
    if _boot is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
                _boot = fh.read().decode().strip()
        except OSError:
            _boot = f"{socket.gethostname()}:{int(psutil.boot_time())}"
    return _boot


def start_of(pid: int) -> int | None:
    """The start time token of `pid`, or None when there is no such process."""
    if HAS_PROCFS:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            return None
        # the command name (field 2) may hold spaces and parentheses: split after its end
        fields = raw[raw.rindex(b")") + 2 :].split()
        return int(fields[19])  # field 22 overall
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except psutil.Error:
        return None


def own_identity() -> tuple[int, int]:
    """(pid, start) of this process, cached per PID."""
    global _self
    pid = os.getpid()
    cached = _self
    if cached is None or cached[0] != pid:
        cached = (pid, start_of(pid) or 0)
        _self = cached
    return cached


def forget_identity() -> None:
    """After a fork: this is another process (a reference swap, no I/O)."""
    global _self
    _self = None


def is_alive(pid: int, start: int | None, boot: str | None = None) -> bool:
    """True unless `(pid, start)` is provably gone on this boot."""
    if boot is not None and boot != boot_id():
        return True
    actual = start_of(pid)
    if actual is None:
        return False
    if start is not None and start != 0:
        same = actual == start if HAS_PROCFS else abs(actual - start) < 1000
        if not same:
            return False  # the PID was recycled: its old owner is dead
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def ancestors(limit: int = 16) -> list[tuple[int, int]]:
    """(pid, start) of this process's parents, nearest first, up to `limit`."""
    out: list[tuple[int, int]] = []
    pid = os.getppid()
    while pid > 1 and len(out) < limit:
        start = start_of(pid)
        if start is None:
            break
        out.append((pid, start))
        try:
            pid = psutil.Process(pid).ppid()
        except psutil.Error:
            break
    return out
