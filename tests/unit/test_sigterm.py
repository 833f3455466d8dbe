"""`_sigterm`: a SIGTERM flushes, then does what it did before (default: end the process;
a program's handler: run it; ignored: stays ignored). Its job is a signal in a process, so
each case runs in a forked child that reports through a pipe."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from zstream_mp import _sigterm
from zstream_mp._sender import THREAD_PREFIX


def _in_child(body: Callable[[int], None]) -> tuple[int, bytes]:
    """Run `body(write_fd)` in a forked child; (its wait status, what it wrote)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            os.close(read_fd)
            _sigterm.after_fork_in_child()
            body(write_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        said = fh.read()
    _, status = os.waitpid(pid, 0)
    return status, said


def _say(fd: int, text: bytes) -> Callable[[], None]:
    """A flush that only says it ran."""

    def flush() -> None:
        os.write(fd, text)

    return flush


def _flush_to(fd: int) -> Callable[[], None]:
    return _say(fd, b"flushed;")


def _recording(started: list[str]) -> Callable[[threading.Thread], None]:
    """A thread starter that notes each thread's name."""

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        thread.start()

    return start


def test_the_default_sigterm_flushes_then_ends_the_process() -> None:
    def body(fd: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm.install(_flush_to(fd), lambda t: t.start())
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between these bytecodes
            pass
        os.write(fd, b"survived;")

    status, said = _in_child(body)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert said == b"flushed;"


def test_a_programs_own_handler_runs_after_the_flush() -> None:
    def body(fd: int) -> None:
        def own(signum: int, frame: object) -> None:
            os.write(fd, b"own handler;")
            os._exit(7)

        signal.signal(signal.SIGTERM, own)
        _sigterm.install(_flush_to(fd), lambda t: t.start())
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass

    status, said = _in_child(body)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    assert said == b"flushed;own handler;"


def test_an_ignored_sigterm_stays_ignored_and_flushes_nothing() -> None:
    def body(fd: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _sigterm.install(_flush_to(fd), lambda t: t.start())
        os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.write(fd, b"alive;")

    status, said = _in_child(body)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert said == b"alive;"


def test_the_watcher_starts_only_for_the_default_disposition() -> None:
    def body(fd: int) -> None:
        started: list[str] = []
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm.install(lambda: None, _recording(started))
        os.write(fd, ("|".join(started) + ";").encode())
        _sigterm.after_fork_in_child()  # forget it, as a forked child would
        signal.signal(signal.SIGTERM, lambda s, f: None)
        started.clear()
        _sigterm.install(lambda: None, _recording(started))
        os.write(fd, ("|".join(started) + ";").encode())

    status, said = _in_child(body)
    assert status == 0
    assert said == f"{THREAD_PREFIX}sigterm;;".encode()


def test_an_event_loop_owning_the_wakeup_fd_keeps_it_and_gets_no_watcher() -> None:
    def body(fd: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _owner_r, owner_w = os.pipe()
        os.set_blocking(owner_w, False)
        signal.set_wakeup_fd(owner_w)
        started: list[str] = []
        _sigterm.install(lambda: None, _recording(started))
        ok = not started and signal.set_wakeup_fd(-1) == owner_w
        os.write(fd, b"kept;" if ok else b"taken;")

    status, said = _in_child(body)
    assert status == 0 and said == b"kept;"


def test_install_is_once_per_process_and_main_thread_only() -> None:
    def body(fd: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        thread = threading.Thread(
            target=_sigterm.install, args=(_say(fd, b"worker;"), lambda t: t.start())
        )
        thread.start()
        thread.join()
        untouched = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        os.write(fd, f"{untouched};".encode())
        _sigterm.install(_say(fd, b"first;"), lambda t: t.start())
        _sigterm.install(_say(fd, b"second;"), lambda t: t.start())
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass

    status, said = _in_child(body)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert said == b"True;first;"


def test_a_child_drops_the_parents_watcher_pipe_and_can_install_its_own() -> None:
    def body(fd: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm.install(lambda: None, lambda t: t.start())
        owned = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(owned)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _sigterm.after_fork_in_child()
                released = signal.set_wakeup_fd(-1) == -1
                closed = True
                try:
                    os.fstat(owned)
                    closed = False
                except OSError:
                    pass
                started: list[str] = []
                _sigterm.install(lambda: None, _recording(started))
                code = 0 if released and closed and started else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.write(fd, str(os.WEXITSTATUS(status)).encode())

    status, said = _in_child(body)
    assert status == 0 and said == b"0"


def test_the_watchers_exit_status_is_what_a_shell_reports_for_sigterm() -> None:
    assert _sigterm.EXIT_CODE == 128 + signal.SIGTERM == 143
