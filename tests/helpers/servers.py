"""Our server for tests: `zstream-mp serve` in a subprocess on a free loopback port.

    with start_server(token="t") as srv:       # RunningServer
        srv.url, srv.token, srv.proc, srv.headers
        run_id = srv.create_run(); srv.end_run(run_id)

`start_server(**opts)` maps keyword options to `zstream-mp serve` flags: tokens_file,
broker, disabled, strict_runs, heartbeat, max_stream_length, stream_ttl, max_subscribers,
deployment_id, max_request_body (True for a flag without a value). The server is started
and its banner read by `zstream_mp.cli._serve_process`, the one starter the demo and the
benchmarks use too; a server that cannot start raises `NotRunnable` with its stderr.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from zstream_mp._wire import (
    AUTHORIZATION,
    ENV_SERVE_TOKEN,
    bearer,
    run_end_url,
    runs_url,
)
from zstream_mp.cli._serve_process import (
    BANNER_PREFIX,
    ServeFailed,
    ServeProcess,
    start_serve,
)

REPO = Path(__file__).resolve().parents[2]
PREFIX = BANNER_PREFIX
TEST_TOKEN = "test-token-0123456789"  # the `auth_server` fixture token (read,write)


class NotRunnable(RuntimeError):
    """A process the tests need cannot be started here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    """A running `zstream-mp serve`; `stop()` sends SIGTERM (graceful), then kills."""

    url: str
    token: str | None
    served: ServeProcess

    @property
    def proc(self) -> subprocess.Popen[str]:
        return self.served.proc

    @property
    def banner(self) -> list[str]:
        return self.served.banner

    @property
    def headers(self) -> dict[str, str]:
        return {AUTHORIZATION: bearer(self.token)} if self.token else {}

    def auth(self) -> dict[str, str]:
        return self.headers

    def create_run(self, run_id: str | None = None) -> str:
        """Register a run through our lifecycle extension and return its id."""
        body = {"id": run_id} if run_id else {}
        r = httpx.post(runs_url(self.url), json=body, headers=self.headers, timeout=10)
        if r.status_code != 201:
            raise AssertionError(f"create run -> {r.status_code} {r.text[:300]}")
        return str(r.json()["id"])

    def end_run(self, run_id: str) -> None:
        r = httpx.post(run_end_url(self.url, run_id), headers=self.headers, timeout=30)
        if r.status_code != 200:
            raise AssertionError(f"end run -> {r.status_code} {r.text[:300]}")

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.served.stop(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_args(token: str | None = None, port: int = 0, **opts: Any) -> list[str]:
    """`zstream-mp serve` flags for `start_server`'s keyword options."""
    args = ["--host", "127.0.0.1", "--port", str(port)]
    if token:
        args += ["--token", token]
    for name, value in opts.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def start_server(
    *, token: str | None = None, port: int = 0, timeout: float = 30.0, **opts: Any
) -> RunningServer:
    """Start `python -m zstream_mp serve` from this checkout; return once it answers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(ENV_SERVE_TOKEN, None)
    try:
        served = start_serve(
            serve_args(token, port, **opts),
            python=sys.executable,
            env=env,
            cwd=str(REPO),
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except ServeFailed as exc:
        raise NotRunnable(str(exc)) from None
    return RunningServer(served.url, token, served)
