"""`_deadline`: every socket operation of a request held to one deadline.

A listening Unix socket in a temp dir stands in for a server that accepts and never
answers (the kernel completes the connection; nothing is ever sent back).
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest

from zstream_mp._deadline import DeadlineBackend, acquire_until, within


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    try:
        yield path
    finally:
        listener.close()


def test_without_a_deadline_operations_keep_their_own_timeout(silent_socket: str) -> None:
    stream = DeadlineBackend().connect_unix_socket(silent_socket, timeout=5.0)
    try:
        stream.write(b"hello", timeout=5.0)
        with pytest.raises(httpcore.ReadTimeout):
            stream.read(10, timeout=0.01)
    finally:
        stream.close()


def test_a_passed_deadline_refuses_to_connect(silent_socket: str) -> None:
    with within(time.monotonic() - 1), pytest.raises(httpcore.ConnectTimeout):
        DeadlineBackend().connect_unix_socket(silent_socket, timeout=5.0)


def test_a_passed_deadline_refuses_a_tcp_connect_before_any_socket() -> None:
    with within(time.monotonic() - 1), pytest.raises(httpcore.ConnectTimeout, match="deadline"):
        DeadlineBackend().connect_tcp("127.0.0.1", 9, timeout=None)


def test_reads_and_writes_after_the_deadline_raise_their_own_timeouts(silent_socket: str) -> None:
    stream = DeadlineBackend().connect_unix_socket(silent_socket, timeout=5.0)
    try:
        with within(time.monotonic() - 1):
            with pytest.raises(httpcore.ReadTimeout):
                stream.read(10, timeout=None)
            with pytest.raises(httpcore.WriteTimeout):
                stream.write(b"x", timeout=None)
    finally:
        stream.close()


def test_a_read_without_its_own_timeout_ends_at_the_deadline(silent_socket: str) -> None:
    """A silent server cannot hold a read past the deadline, even with no read timeout."""
    stream = DeadlineBackend().connect_unix_socket(silent_socket, timeout=5.0)
    try:
        with within(time.monotonic() + 0.05), pytest.raises(httpcore.ReadTimeout):
            stream.read(10, timeout=None)
    finally:
        stream.close()


def test_within_nests_and_restores_the_outer_deadline(silent_socket: str) -> None:
    backend = DeadlineBackend()
    with within(time.monotonic() + 60):
        with within(time.monotonic() - 1), pytest.raises(httpcore.ConnectTimeout):
            backend.connect_unix_socket(silent_socket)
        backend.connect_unix_socket(silent_socket).close()  # the outer one is back
    backend.connect_unix_socket(silent_socket).close()


def test_the_deadline_belongs_to_the_thread_that_set_it(silent_socket: str) -> None:
    errors: list[BaseException] = []

    def other() -> None:
        try:
            DeadlineBackend().connect_unix_socket(silent_socket).close()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    with within(time.monotonic() - 1):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
    assert errors == []


def test_the_extra_info_comes_from_the_real_stream(silent_socket: str) -> None:
    stream = DeadlineBackend().connect_unix_socket(silent_socket)
    try:
        assert isinstance(stream.get_extra_info("socket"), socket.socket)
    finally:
        stream.close()


def test_acquire_until_a_free_lock() -> None:
    lock = threading.Lock()
    assert acquire_until(lock, time.monotonic() + 1)
    lock.release()
    assert acquire_until(lock, math.inf)
    lock.release()


def test_acquire_until_a_passed_deadline_gives_up_on_a_held_lock() -> None:
    lock = threading.Lock()
    lock.acquire()
    try:
        assert not acquire_until(lock, time.monotonic() - 1)
    finally:
        lock.release()


def test_acquire_until_a_passed_deadline_still_takes_a_free_lock() -> None:
    lock = threading.Lock()
    assert acquire_until(lock, time.monotonic() - 1)
    lock.release()
