"""Processes the contract suite starts itself: our server (through its CLI) and redis-server.

Our server is started through the CLI contract only (``python -m zstream_mp serve``, first
stdout line ``zstream-mp serving on http://HOST:PORT``), so this file needs nothing from
the server's internals. Every process started here is stopped by its own handle.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_PREFIX = "zstream-mp serving on "


def _terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, a grace of 10 s, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class NotRunnable(RuntimeError):
    """A process the suite needs cannot be started here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class RedisProc:
    """A private redis-server on a loopback port (no persistence)."""

    port: int
    proc: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)

    def kill(self) -> None:
        """Hard stop, as a crash would look to the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        fresh = start_redis(self.port)
        self.proc = fresh.proc


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def start_redis(port: int | None = None) -> RedisProc:
    exe = redis_binary()
    if exe is None:
        raise NotRunnable("redis-server is not installed")
    port = port or free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return RedisProc(port, proc)
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise NotRunnable(f"redis-server did not answer on port {port}")


@dataclasses.dataclass
class OurServer:
    """Our server started through its CLI."""

    url: str
    token: str | None
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        _terminate(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def create_run(self, run_id: str | None = None) -> str:
        """Register a run through the lifecycle extension and return its id."""
        body = {"id": run_id} if run_id else {}
        r = httpx.post(
            f"{self.url}/api/v1/zstream/runs", json=body, headers=self.auth(), timeout=10
        )
        if r.status_code != 201:
            raise AssertionError(f"POST /api/v1/zstream/runs -> {r.status_code} {r.text[:300]}")
        return str(r.json()["id"])

    def end_run(self, run_id: str) -> None:
        r = httpx.post(
            f"{self.url}/api/v1/zstream/runs/{run_id}/end", headers=self.auth(), timeout=10
        )
        if r.status_code != 200:
            raise AssertionError(f"POST .../end -> {r.status_code} {r.text[:300]}")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def start_ours(
    *,
    broker: str = "memory",
    token: str | None = None,
    strict: bool = False,
    disabled: bool = False,
    heartbeat: float | None = None,
    timeout: float = 30.0,
) -> OurServer:
    """Start ``python -m zstream_mp serve`` on a free port; raise NotRunnable if it fails."""
    cmd = [
        sys.executable,
        "-m",
        "zstream_mp",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--broker",
        broker,
    ]
    if token:
        cmd += ["--token", token]
    if strict:
        cmd.append("--strict-runs")
    if disabled:
        cmd.append("--disabled")
    if heartbeat is not None:
        cmd += ["--heartbeat", str(heartbeat)]
    fd, logname = tempfile.mkstemp(prefix="zstream-serve-", suffix=".log")
    log = Path(logname)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fd, cwd=REPO_ROOT, env=env)
    os.close(fd)
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(b"")

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = lines.get(timeout=timeout).decode(errors="replace").strip()
    except queue.Empty:
        first = ""
    if not first.startswith(SERVE_PREFIX):
        proc.kill()
        proc.wait()
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-4:])
        raise NotRunnable(
            f"our server did not start ({' '.join(cmd[3:])}): first line {first!r}; stderr: {tail}"
        )
    url = first[len(SERVE_PREFIX) :].strip()
    server = OurServer(url=url, token=token, proc=proc, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.stop()
    raise NotRunnable(f"our server at {url} never answered GET /health with 200")
