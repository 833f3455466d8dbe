"""Flush before a SIGTERM ends a pool worker (`Pool.terminate()`, `with Pool()`, joblib).

A chaining handler runs the flush, then lets SIGTERM do what it did before: the program's
own handler if it had one, else the default action. `SIG_IGN` stays ignored.

Python runs signal handlers only in the main thread, between bytecodes. A worker whose main
thread is inside a C call that does not return on the signal (a SIGTERM that lands just
before `sem_wait` in `Pool`'s queue, a long computation without the GIL) would never
run the handler, and the pool would wait for that worker forever, where without a handler
the kernel would simply have ended it. So, for the default disposition, the handler is backed
by a watcher thread on the interpreter's wakeup fd: it sees the signal arrive and, if the
main thread has not started the handler within `GRACE` seconds, flushes and exits itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from zstream_mp._sender import THREAD_PREFIX

GRACE = 0.2
"""Seconds the watcher leaves the main thread to start the handler itself."""
EXIT_CODE = 128 + signal.SIGTERM
"""The watcher's exit status: what a shell reports for a process ended by SIGTERM."""

_flush: Callable[[], None] = lambda: None  # noqa: E731
_previous: Any = None
_installed_pid: int | None = None
_started = threading.Event()
_wakeup: tuple[int, int] | None = None


def install(flush: Callable[[], None], start_thread: Callable[[threading.Thread], None]) -> None:
    """Install the handler in this process (main thread only; once per process)."""
    global _flush, _previous, _installed_pid
    if _installed_pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return
    if previous is signal.SIG_IGN:
        return
    if previous is not _on_sigterm:  # inherited across a fork: keep the parent's chain
        _previous = previous
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return
    _flush = flush
    _installed_pid = os.getpid()
    if not callable(_previous):
        _watch_wakeup_fd(start_thread)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _started.set()
    _flush()
    previous = _previous
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _watch_wakeup_fd(start_thread: Callable[[threading.Thread], None]) -> None:
    """Start the watcher, unless someone else (an event loop) owns the wakeup fd."""
    global _wakeup
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        owner = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        owner = None
    if owner != -1:
        if owner is not None:
            signal.set_wakeup_fd(owner)
        os.close(read_fd)
        os.close(write_fd)
        return
    _wakeup = (read_fd, write_fd)
    start_thread(
        threading.Thread(
            target=_watch, args=(read_fd,), name=f"{THREAD_PREFIX}sigterm", daemon=True
        )
    )


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM not in data:
            continue
        if _started.wait(GRACE):
            return  # the main thread runs the handler
        _flush()
        os._exit(EXIT_CODE)


def after_fork_in_child() -> None:
    """The child owns neither the parent's watcher nor its pipe; it installs its own."""
    global _installed_pid, _started, _wakeup
    _installed_pid = None
    _started = threading.Event()
    if _wakeup is not None:
        read_fd, write_fd = _wakeup
        _wakeup = None
        with contextlib.suppress(ValueError, OSError):
            if signal.set_wakeup_fd(-1) not in (-1, write_fd):  # not ours: put it back
                signal.set_wakeup_fd(write_fd)
        for fd in (read_fd, write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
