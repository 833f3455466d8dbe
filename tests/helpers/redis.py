"""A private `redis-server` for tests: a free loopback port, no persistence.

    with start_redis() as r:                   # RunningRedis
        start_server(broker=r.url)
        r.kill()                               # a crash, as the server sees it

Never port 6379 (a system Redis) or 6399 (the ZenML peer's).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from types import TracebackType

from helpers.servers import NotRunnable, free_port


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class RunningRedis:
    """A private redis-server on a loopback port."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: str

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """Hard stop, as a crash would look to the server."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RunningRedis:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def start_redis(port: int = 0, timeout: float = 10.0) -> RunningRedis:
    """Start redis-server and return once it answers PING; `port=0` picks a free one."""
    binary = redis_binary()
    if binary is None:
        raise NotRunnable("redis-server is not installed")
    while port in (0, 6379, 6399):
        port = free_port()
    workdir = tempfile.mkdtemp(prefix="zstream-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return RunningRedis(f"redis://127.0.0.1:{port}/0", port, proc, workdir)
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    _stop(proc)
    shutil.rmtree(workdir, ignore_errors=True)
    raise NotRunnable(f"redis-server did not answer on port {port}")
