"""Start `tests/programs/servers/faultserver.py` and read what it recorded, from a test.

    with FaultProcess(tmp_path, script=[{"status": 503, "count": 2}]) as fs:
        fs.url; fs.set_script([...]); fs.stop(); fs.start()    # a refused, then a back port
        fs.accepted(); fs.requests(); fs.state()

The server program's docstring describes the script rules and the record files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from helpers.programs import program

PROGRAM = program("servers/faultserver.py")


class FaultProcess:
    """A running fault server subprocess, as seen from a test."""

    def __init__(
        self,
        record: Path,
        script: list[dict[str, Any]] | None = None,
        token: str | None = None,
        port: int = 0,
        python: str | None = None,
        *,
        read_tokens: list[str] | None = None,
        upstream: str | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self.record = Path(record)
        self.token = token
        self.read_tokens = list(read_tokens or ())
        self.upstream = upstream
        self.heartbeat = heartbeat
        self.python = python or sys.executable
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.start(script or [])

    def start(self, script: list[dict[str, Any]] | None = None, timeout: float = 10.0) -> None:
        """Start the process (again, on the same port once it has one)."""
        cmd = [
            self.python,
            str(PROGRAM),
            "--port",
            str(self.port),
            "--record",
            str(self.record),
            "--script",
            json.dumps(script or []),
        ]
        if self.token is not None:
            cmd += ["--token", self.token]
        for t in self.read_tokens:
            cmd += ["--read-token", t]
        if self.upstream is not None:
            cmd += ["--upstream", self.upstream]
        if self.heartbeat is not None:
            cmd += ["--heartbeat", str(self.heartbeat)]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
            if line.startswith("faultserver on "):
                break
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.wait()
            if "Address already in use" not in err or time.monotonic() > deadline:
                raise RuntimeError(f"fault server did not start: {line!r} {err}")
            time.sleep(0.05)
        self.url = line.split(" on ", 1)[1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Kill the process: from now on connections are refused."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> FaultProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_script(self, rules: list[dict[str, Any]]) -> None:
        """Replace the fault script of the running server."""
        req = urllib.request.Request(
            f"{self.url}/_control/script", data=json.dumps(rules).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def state(self) -> dict[str, int]:
        """The counters: publish requests received (answered or not) and events accepted."""
        with urllib.request.urlopen(f"{self.url}/_control/state", timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def _lines(self, name: str) -> list[dict[str, Any]]:
        path = self.record / name
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def accepted(self) -> list[dict[str, Any]]:
        """Every accepted event: `{"key", "run", "headers", "event"}`."""
        return self._lines("events.jsonl")

    def requests(self) -> list[dict[str, Any]]:
        """Every publish request, answered or not."""
        return self._lines("requests.jsonl")
