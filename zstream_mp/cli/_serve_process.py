"""`zstream-mp serve` as a child process: the one place that writes and reads its banner.

The first line `zstream-mp serve` prints is `zstream-mp serving on <url>`, once its
socket listens (`--port 0` reports the port it got). The demo, the benchmarks and the
test helpers start a server through `start_serve()`, which waits for that line and for
`GET /health`, and stops it with SIGTERM (the graceful path), then SIGKILL.

A separate process rather than a thread in the caller: the server must not share the
caller's GIL (the benchmarks measure the publisher) nor be copied into forked workers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any

from zstream_mp._wire import HEALTH_PATH
from zstream_mp.errors import ServeFailed as ServeFailed  # what start_serve() raises

BANNER_PREFIX = "zstream-mp serving on "


def banner(url: str) -> str:
    """The first line `zstream-mp serve` prints."""
    return BANNER_PREFIX + url


def url_from_banner(line: str) -> str | None:
    """The URL in a banner line, or None when `line` is not one."""
    if not line.startswith(BANNER_PREFIX):
        return None
    return line[len(BANNER_PREFIX) :].strip() or None


@dataclass
class ServeProcess:
    """A running `zstream-mp serve`; a context manager that stops it."""

    url: str
    proc: subprocess.Popen[str]
    banner: list[str] = field(default_factory=list)
    """The lines read so far (the first one; `read_banner(3)` for auth and broker)."""

    def read_banner(self, lines: int) -> list[str]:
        """Read the banner up to `lines` lines (serve prints URL, auth, broker)."""
        assert self.proc.stdout is not None
        while len(self.banner) < lines:
            self.banner.append(self.proc.stdout.readline().rstrip("\n"))
        return self.banner

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, up to `timeout` s for a graceful exit, then SIGKILL; its exit status."""
        _terminate(self.proc, timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_serve(
    args: Sequence[str] = (),
    *,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
    timeout: float = 20.0,
) -> ServeProcess:
    """Start `python -m zstream_mp serve ARGS` and return once it answers `/health`.

    `args` are `serve` flags; without `--port` a free port is picked. `stderr` is
    where the server's log goes (`subprocess.PIPE` puts its tail into the error when it
    does not start; keep the server quiet then, a full pipe blocks it).
    """
    args = list(args)
    if "--port" not in args:
        args += ["--port", "0"]
    if "--host" not in args:
        args += ["--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [python, "-m", "zstream_mp", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    first = _first_line(proc, timeout)
    url = url_from_banner(first)
    if url is None:
        _terminate(proc, 5.0)
        err = proc.stderr.read()[-2000:] if proc.stderr is not None else ""
        raise ServeFailed(f"zstream-mp serve did not start ({' '.join(args)}): {first!r} {err}")
    running = ServeProcess(url, proc, [first.rstrip("\n")])
    if not _answers_health(url, time.monotonic() + timeout):
        running.stop()
        raise ServeFailed(f"zstream-mp serve at {url} never answered GET {HEALTH_PATH}")
    return running


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, or "" when none comes within `timeout` (then it is killed)."""
    got: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: got.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()  # the reader sees EOF and ends
        reader.join(5)
    return got[0] if got else ""


def _answers_health(url: str, deadline: float) -> bool:
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(url + HEALTH_PATH, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


def _terminate(proc: subprocess.Popen[str], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
