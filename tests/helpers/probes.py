"""Measuring attacks on loopback: peak RSS of a process, raw HTTP, a server under limits.

with RssSampler(pid) as rss: ...; rss.grown        # peak minus start, bytes
start_serve_limited(args, nofile=1024, log=path)   # serve with `ulimit -n`, log to a file
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from zstream_mp.cli._serve_process import (
    ServeProcess,
    _answers_health,
    _first_line,
    _terminate,
    url_from_banner,
)

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


class RssSampler(threading.Thread):
    """Peak resident memory of a process (and its children), sampled every 10 ms."""

    def __init__(self, pid: int, children: bool = False) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.children = children
        self.base = self._rss()
        self.peak = self.base
        self.done = threading.Event()

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        if self.children:
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return int(total)

    def run(self) -> None:
        while not self.done.wait(0.01):
            try:
                self.peak = max(self.peak, self._rss())
            except psutil.Error:
                return

    @property
    def grown(self) -> int:
        return self.peak - self.base

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.done.set()
        self.join(2)


def addr_of(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return host.strip("[]"), int(port)


def raw_request(url: str, data: bytes, timeout: float = 30.0) -> bytes:
    """Send `data` on a fresh connection; what the server answered before closing or
    before `timeout` (the head at least)."""
    with socket.create_connection(addr_of(url), timeout=timeout) as s:
        with contextlib.suppress(OSError):  # the server may answer early and close
            s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except OSError:
            pass
        return b"".join(chunks)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ZSTREAM_SERVE_TOKEN", None)
    env.update(extra)
    return env


def start_serve_limited(
    args: list[str], *, log: Path, nofile: int | None = None, timeout: float = 30.0
) -> ServeProcess:
    """`zstream-mp serve ARGS` on a free loopback port, its log (stderr) in `log`, under
    `ulimit -n nofile` (soft and hard) when given."""

    def limit() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    out = open(log, "wb")  # noqa: SIM115 - the child writes it for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "zstream_mp", "serve", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=out,
        text=True,
        env=child_env(),
        cwd=str(REPO),
        preexec_fn=limit,
    )
    out.close()
    first = _first_line(proc, timeout)
    url = url_from_banner(first)
    if url is None:
        _terminate(proc, 5.0)
        raise RuntimeError(f"serve did not start: {first!r} {log.read_text()[-2000:]}")
    served = ServeProcess(url, proc, [first.rstrip("\n")])
    if not _answers_health(url, __import__("time").monotonic() + timeout):
        served.stop()
        raise RuntimeError(f"serve at {url} never answered /health")
    return served


def cpu_seconds(proc: Any) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return float(times.user + times.system)
