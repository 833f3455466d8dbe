"""Run real ZenML pipelines (peer venv, local orchestrator) that publish through zstream_mp.

* `ensure_zstream_in_peer(python)`: make `import zstream_mp` in the ZenML peer venv
  resolve to this checkout (an editable install in compat mode, i.e. a path entry, so
  modules added later are picked up). Idempotent; guarded by a file lock.
* `run_pipeline(peer, mode, workdir, env=...)`: run `programs/zenml/streaming_pipeline.py`
  in a fresh ZenML repository under `workdir` and return what each step recorded.
* `read_stream(url, run_id, token)`: replay a run's SSE stream up to `end` as raw frames.
* `start_zstream_server()`: our server, through `helpers.servers`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock

from helpers.programs import program
from helpers.zenml_peer import Peer, client_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_SCRIPT = program("zenml/streaming_pipeline.py")
PIP_TIMEOUT = float(os.environ.get("ZSTREAM_ZENML_PIP_TIMEOUT", "300"))


class ZStreamNotInstallable(RuntimeError):
    """zstream_mp cannot be made importable in the peer venv; the message says why."""


def _installed_here(python: str) -> bool:
    probe = (
        "import pathlib, zstream_mp, httpx, psutil, filelock; "
        "print(pathlib.Path(zstream_mp.__file__).resolve().parent.parent)"
    )
    out = subprocess.run(
        [python, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    # Any checkout will do: the pipelines run with PYTHONPATH=REPO_ROOT (`client_env`), so
    # the venv only has to provide zstream_mp's dependencies.
    return out.returncode == 0


def ensure_peer_packages(python: str, *packages: str) -> None:
    """`pip install` what a pipeline imports (joblib, distributed) into the peer venv."""
    missing = [
        p
        for p in packages
        if subprocess.run([python, "-c", f"import {p}"], capture_output=True).returncode
    ]
    if not missing:
        return
    venv = Path(python).parent.parent
    with FileLock(str(venv / ".zstream-install.lock")).acquire(timeout=PIP_TIMEOUT):
        out = subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *missing],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
        )
    if out.returncode != 0:
        tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-5:])
        raise ZStreamNotInstallable(f"pip install {missing} into {venv} failed: {tail}")


def ensure_zstream_in_peer(python: str) -> None:
    """`pip install -e` this checkout into the peer venv unless it already resolves here."""
    if _installed_here(python):
        return
    venv = Path(python).parent.parent
    lock = FileLock(str(venv / ".zstream-install.lock"))
    with lock.acquire(timeout=PIP_TIMEOUT):
        if _installed_here(python):
            return
        cmd = [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--config-settings",
            "editable_mode=compat",
            "-e",
            str(REPO_ROOT),
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise ZStreamNotInstallable(f"pip install into {venv} timed out") from exc
        if out.returncode != 0 or not _installed_here(python):
            tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-5:])
            raise ZStreamNotInstallable(
                f"pip install -e {REPO_ROOT} into {venv} failed rc={out.returncode}: {tail}"
            )


@dataclasses.dataclass
class PipelineResult:
    """What a pipeline run left behind: per-step records, the log, the exit code."""

    mode: str
    returncode: int
    log: str
    steps: dict[str, dict[str, Any]]
    workdir: Path

    @property
    def run_id(self) -> str:
        ids = {s["run_id"] for s in self.steps.values() if s.get("run_id")}
        assert len(ids) == 1, f"steps disagree on the run id: {ids}"
        return ids.pop()

    def check(self) -> None:
        assert self.returncode == 0, f"pipeline {self.mode} failed:\n{self.log[-4000:]}"


def _prepare(
    peer: Peer,
    script: Path,
    workdir: Path,
    env: dict[str, str] | None,
    local_store: bool,
) -> tuple[Path, Path, dict[str, str]]:
    repo, out, home = workdir / "repo", workdir / "out", workdir / "home"
    for d in (repo, out, home):
        d.mkdir(parents=True, exist_ok=True)
    for source in script.parent.glob("*.py"):  # the script and its modules, in the source root
        shutil.copy(source, repo / source.name)
    full_env = client_env(peer, workdir)
    if local_store:
        full_env.pop("ZENML_STORE_URL")
        full_env.pop("ZENML_STORE_API_KEY")
    full_env.update(env or {})
    return repo, out, full_env


def run_pipeline(
    peer: Peer,
    mode: str,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    local_store: bool = False,
    timeout: float = 300.0,
    script: Path = PIPELINE_SCRIPT,
    args: tuple[str, ...] = (),
) -> PipelineResult:
    """Run one pipeline of `script` (`streaming_pipeline.py`) in a new ZenML repo.

    `local_store`: the client uses its own local SQLite store instead of the peer server
    (only the peer's venv is used).
    """
    repo, out, full_env = _prepare(peer, script, workdir, env, local_store)
    proc = subprocess.run(
        [peer.python, script.name, mode, str(out), *args],
        cwd=repo,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    (workdir / "pipeline.log").write_text(proc.stdout)
    steps = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    return PipelineResult(mode, proc.returncode, proc.stdout, steps, workdir)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One SSE frame as sent: `id` and `event` lines, `data` as the raw string."""

    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def read_stream(url: str, run_id: str, token: str | None, *, timeout: float = 90.0) -> list[Frame]:
    """Replay `run_id`'s stream from the start; stop at `end` (fail if it never comes)."""
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    fields: dict[str, list[str]] = {}
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=timeout)) as client,
        client.stream("GET", f"{url}/api/v1/runs/{run_id}/events/stream", headers=headers) as resp,
    ):
        assert resp.status_code == 200, f"SSE {resp.status_code}: {resp.read()!r}"
        for line in _sse_lines(resp.iter_bytes()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no end frame within {timeout}s; got {len(frames)} frames")
            if line.startswith(":"):
                continue
            if line == "":
                if fields:
                    frame = Frame(
                        id=fields.get("id", [None])[0],
                        event=fields.get("event", ["message"])[0],
                        data="\n".join(fields.get("data", [])),
                    )
                    frames.append(frame)
                    fields = {}
                    if frame.event == "end":
                        return frames
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
    raise AssertionError(f"stream closed without an end frame after {len(frames)} frames")


def _sse_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """SSE lines end only at CRLF, LF or CR; str.splitlines (httpx's iter_lines) would
    also split on U+2028, U+0085 and friends, which ZenML sends raw inside JSON strings."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while True:
            cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
            if cut < 0 or (buf[cut : cut + 1] == b"\r" and cut + 1 == len(buf)):
                break  # need more bytes (a CR may be the first half of CRLF)
            line, rest = buf[:cut], buf[cut + 1 :]
            if buf[cut : cut + 2] == b"\r\n":
                rest = buf[cut + 2 :]
            yield line.decode("utf-8")
            buf = rest


def events_by(frames: list[Frame], field: str = "via") -> dict[str, list[Frame]]:
    """Event frames grouped by a payload field (control frames left out)."""
    out: dict[str, list[Frame]] = {}
    for f in frames:
        if f.event in ("end", "gap", "cursor", "error", "system"):
            continue
        out.setdefault(str(f.json()["payload"].get(field)), []).append(f)
    return out


@dataclasses.dataclass
class OurServer:
    """Our server, reachable at `url`; `token` is None when it runs open."""

    url: str
    token: str | None

    def end_run(self, run_id: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = httpx.post(f"{self.url}/api/v1/zstream/runs/{run_id}/end", headers=headers, timeout=30)
        assert r.status_code == 200, f"end run: {r.status_code} {r.text}"


@contextlib.contextmanager
def start_zstream_server(token: str | None = None) -> Iterator[OurServer]:
    """Our server on a free loopback port, through `helpers.servers`."""
    from helpers.servers import start_server

    with start_server(token=token) as running:
        yield OurServer(running.url, running.token)
