"""`_recovery/liveness`: a process identity that survives PID reuse, and a liveness test
that declares a process dead only on proof."""

from __future__ import annotations

import os

from zstream_mp._recovery import liveness
from zstream_mp._recovery.liveness import (
    ancestors,
    boot_id,
    forget_identity,
    is_alive,
    own_identity,
    start_of,
)


def _unused_pid() -> int:
    pid = 4_000_000
    while start_of(pid) is not None:
        pid -= 1
    return pid


def test_this_process_is_alive_by_its_own_identity() -> None:
    pid, start = own_identity()
    assert pid == os.getpid() and start == start_of(pid) and start
    assert is_alive(pid, start, boot_id())


def test_the_own_identity_is_cached_and_recomputed_once_forgotten() -> None:
    assert own_identity() is own_identity()
    before = own_identity()
    forget_identity()
    assert own_identity() == before  # recomputed: still this process


def test_a_pid_with_another_start_time_is_a_recycled_pid() -> None:
    pid, start = own_identity()
    other = start + 1 if liveness.HAS_PROCFS else start + 10_000
    assert not is_alive(pid, other)


def test_an_unknown_start_trusts_the_pid() -> None:
    assert is_alive(os.getpid(), None)
    assert is_alive(os.getpid(), 0)


def test_no_such_process_is_dead() -> None:
    pid = _unused_pid()
    assert start_of(pid) is None
    assert not is_alive(pid, None)


def test_an_identity_from_another_boot_cannot_be_probed_so_counts_as_alive() -> None:
    assert is_alive(_unused_pid(), 123, boot="another-host:1")


def test_a_zombie_is_dead() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        assert start_of(pid) is not None
        assert not is_alive(pid, start_of(pid))
    finally:
        os.waitpid(pid, 0)


def test_a_child_sees_this_process_as_its_nearest_ancestor() -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            forget_identity()
            os.write(write_fd, repr(ancestors()[:1]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        seen = fh.read()
    os.waitpid(pid, 0)
    assert seen == repr([own_identity()])


def test_ancestors_are_bounded_and_start_with_the_parent() -> None:
    chain = ancestors()
    assert chain and chain[0] == (os.getppid(), start_of(os.getppid()))
    assert len(ancestors(limit=1)) == 1
    assert ancestors(limit=0) == []


def test_the_boot_id_is_stable_text() -> None:
    assert boot_id() == boot_id() and boot_id().strip() == boot_id() and boot_id()
