"""A network backend for httpcore that holds every socket operation to one deadline.

httpx's timeouts bound each connect, read and write separately: a server that sends one
byte a second never trips a two-second read timeout, and holds the request (and every
event queued behind it) for as long as it likes. `within(deadline)` sets the deadline of
the current thread's request; the backend clamps each operation's timeout to what is left
of it and raises httpcore's own timeout errors (which httpx maps to its own) once it has
passed.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import typing
from collections.abc import Iterable, Iterator

import httpcore

if typing.TYPE_CHECKING:
    import ssl

_local = threading.local()


@contextlib.contextmanager
def within(deadline: float) -> Iterator[None]:
    """Hold the socket operations of this thread to `deadline` (`time.monotonic()`)."""
    previous = getattr(_local, "deadline", math.inf)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    deadline: float = getattr(_local, "deadline", math.inf)
    if deadline == math.inf:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise error("the request's deadline has passed")
    return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        clamped = _clamp(timeout, httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, clamped))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, every operation clamped to the thread's deadline."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        clamped = _clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, clamped, local_address, socket_options)
        return _Stream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        clamped = _clamp(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_unix_socket(path, clamped, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def acquire_until(lock: threading.Lock, deadline: float) -> bool:
    """Acquire `lock` by `deadline` (`time.monotonic()`; `math.inf` waits for ever)."""
    if deadline == math.inf:
        return lock.acquire()
    return lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
