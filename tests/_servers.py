"""Real server and Redis processes for tests, on free loopback ports.

    with start_server(token="t") as srv:       # zstream-mp serve in a subprocess
        srv.url, srv.token, srv.proc
    with start_redis() as r:                   # redis-server on a free port, no persistence
        start_server(broker=r.url)

`start_server(**opts)` maps keyword options to `zstream-mp serve` flags: token, tokens_file,
broker, disabled, strict_runs, heartbeat, max_stream_length, stream_ttl, max_subscribers,
deployment_id, max_request_body (True flags for booleans). The banner's first line gives
the URL, so `port=0` (the default) always works.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PREFIX = "zstream-mp serving on "
TEST_TOKEN = "test-token-0123456789"  # the `auth_server` fixture token (read,write)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class RunningServer:
    """A `zstream-mp serve` subprocess; stop() sends SIGTERM (graceful), then kills."""

    url: str
    token: str | None
    proc: subprocess.Popen[str]
    banner: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self, timeout: float = 10.0) -> int | None:
        _stop(self.proc, timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_server(
    *, token: str | None = None, port: int = 0, timeout: float = 20.0, **opts: Any
) -> RunningServer:
    """Start `python -m zstream_mp serve` and wait for its banner line."""
    cmd = [sys.executable, "-m", "zstream_mp", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if token:
        cmd += ["--token", token]
    for name, value in opts.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ZSTREAM_SERVE_TOKEN", None)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    first = proc.stdout.readline()
    if not first.startswith(PREFIX):
        _stop(proc)
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"server did not start: {first!r} {err[-2000:]}")
    url = first[len(PREFIX) :].strip()
    banner = [first.rstrip("\n")]
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return RunningServer(url, token, proc, banner)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    _stop(proc)
    raise RuntimeError("server did not answer /health in time")


@dataclass
class RunningRedis:
    """A private redis-server (no persistence) on a free loopback port."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: str

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)

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
    """Start redis-server; `port=0` picks a free one (never 6379 or 6399)."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server not installed")
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
            time.sleep(0.05)
    _stop(proc)
    raise RuntimeError("redis-server did not start")


def sse_body(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: Any = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """GET an SSE stream and read until the server closes it (fails on `timeout`)."""
    import httpx

    with httpx.stream(
        "GET", url, headers=headers, params=params, timeout=httpx.Timeout(timeout)
    ) as resp:
        body = resp.read()
        return resp.status_code, dict(resp.headers), body


def frames_of(body: bytes) -> list[dict[str, str]]:
    """Split raw SSE bytes into frames: {'id'?, 'event', 'data'} or {'comment': ...}."""
    out: list[dict[str, str]] = []
    for block in body.decode("utf-8").split("\n\n"):
        if not block:
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                frame[name] = value
        out.append(frame)
    return out
