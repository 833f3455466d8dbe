"""Where the fork tests publish to, and how they count what arrived.

A target owns one run on one server. `collect()` returns every payload the server holds for
the run, in arrival order, so a test can assert the exact multiset of identities.

- `FaultTarget`: tests/helpers/faultserver.py in pass-through mode with a slow start (the first
  requests are answered late, so the parent's queue is certainly not empty when it forks);
  counts from its JSONL record, which also shows the Idempotency-Key of every copy.
- `ServerTarget`: our server (memory broker); counts by ending the run and replaying it
  with `subscribe()`.
- `ZenmlTarget`: the real ZenML 0.98.0 peer through tests/helpers/zenml_peer.py `held_run()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from helpers import programs


class Target:
    name = "target"
    url: str
    token: str | None = None
    run_id: str

    expect: tuple[str, int] | None = None
    """(tag, count): what a complete collection holds, for targets that read on silence."""

    def collect(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FaultTarget(Target):
    name = "fault"

    def __init__(self, record: Path, slow_start: float = 0.3) -> None:
        from helpers.faultserver import FaultProcess

        script = [{"action": "accept", "delay": slow_start, "count": 2}] if slow_start else []
        self.server = FaultProcess(record, script=script)
        self.url = self.server.url
        self.run_id = str(uuid.uuid4())

    def collect(self) -> list[dict[str, Any]]:
        return [e["event"]["payload"] for e in self.server.accepted() if e["run"] == self.run_id]

    def close(self) -> None:
        self.server.stop()


def _payload(item: Any) -> dict[str, Any] | None:
    """The payload of one item yielded by subscribe(), whatever its shape."""
    kind = item.get("kind") if isinstance(item, dict) else getattr(item, "kind", None)
    if kind in {"end", "gap", "cursor", "error", "system"}:
        return None
    if isinstance(item, dict):
        return item.get("payload")
    return getattr(item, "payload", None)


def replay(
    url: str, run_id: str, token: str | None, deadline: float = 60.0
) -> list[dict[str, Any]]:
    """Replay a finished run's whole history with subscribe(), bounded by a deadline."""
    from zstream_mp import subscribe

    out: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for item in subscribe(url, run_id, token=token):
                payload = _payload(item)
                if payload is not None:
                    out.append(payload)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(deadline)
    if t.is_alive():
        raise AssertionError(f"subscribe() replay of run {run_id} did not end in {deadline}s")
    if errors:
        raise errors[0]
    return out


class ServerTarget(Target):
    name = "server"

    def __init__(self, server: Any) -> None:
        import httpx

        self.url = server.url
        self.token = server.token
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._headers = headers
        r = httpx.post(f"{self.url}/api/v1/zstream/runs", json={}, headers=headers, timeout=10)
        r.raise_for_status()
        self.run_id = r.json()["id"]

    def collect(self) -> list[dict[str, Any]]:
        import httpx

        r = httpx.post(
            f"{self.url}/api/v1/zstream/runs/{self.run_id}/end", headers=self._headers, timeout=10
        )
        r.raise_for_status()
        return replay(self.url, self.run_id, self.token)


def count_identities(payloads: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    return Counter((str(p.get("worker")), int(p.get("seq", -1))) for p in payloads)


def check_exactly_once(payloads: list[dict[str, Any]], expected: dict[str, int]) -> list[str]:
    """Problems with the multiset of (worker, seq) against `expected` (worker -> count)."""
    got = count_identities(payloads)
    want = {(w, s) for w, n in expected.items() for s in range(n)}
    problems = []
    missing = sorted(want - set(got))
    dups = sorted(k for k, n in got.items() if n > 1)
    extra = sorted(set(got) - want)
    if missing:
        per = Counter(w for w, _ in missing)
        problems.append(f"{len(missing)} missing, per worker {dict(per)}; first {missing[:5]}")
    if dups:
        per = Counter(w for w, _ in dups)
        problems.append(f"{len(dups)} duplicated, per worker {dict(per)}; first {dups[:5]}")
    if extra:
        problems.append(f"{len(extra)} unexpected: {extra[:5]}")
    return problems


def _group_members(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(p.info["pid"]) == pgid:
                out.append(p.info["pid"])
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return out


class CaseResult:
    def __init__(
        self,
        returncode: int | None,
        stdout: str,
        stderr: str,
        elapsed: float,
        timed_out: bool,
        stragglers: list[int],
    ) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.timed_out = timed_out
        self.stragglers = stragglers


def run_bounded(cmd: list[str], *, env: dict[str, str], deadline: float) -> CaseResult:
    """Run `cmd` in its own process group; wait for it AND every descendant left behind.

    Everything still alive at the deadline is killed and reported, so a deadlock fails the
    case instead of hanging the test session.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        timed_out = True
        # Every process of a case dumps its threads' stacks on SIGUSR1 (faulthandler):
        # ask for them before killing, so a deadlock says where it is.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGUSR1)
        time.sleep(2.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    # Orphans (daemonic pool workers, loky workers) may still be flushing: wait for them too.
    stragglers: list[int] = []
    while True:
        stragglers = _group_members(proc.pid)
        if not stragglers:
            break
        if time.monotonic() - start > deadline:
            timed_out = True
            for pid in stragglers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return CaseResult(
        proc.returncode, stdout, stderr, time.monotonic() - start, timed_out, stragglers
    )


def child_env(python: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a driver: the repo and `tests/` importable, no inherited binding."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("ZSTREAM_", "ZENML_STREAM_"))
    }
    env = programs.env(base=inherited)
    if os.environ.get("ZSTREAM_STATE_DIR"):  # the test's own state dir: no cross-test adoption
        env["ZSTREAM_STATE_DIR"] = os.environ["ZSTREAM_STATE_DIR"]
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def interpreters() -> list[str]:
    """sys.executable, plus every interpreter in ZSTREAM_TEST_PYTHONS (comma separated)."""
    out = [sys.executable]
    for item in os.environ.get("ZSTREAM_TEST_PYTHONS", "").split(","):
        item = os.path.expanduser(item.strip())
        if item and item not in out:
            out.append(item)
    return out


def python_version(python: str) -> str:
    r = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.stdout.strip() or f"broken:{python}"


def sse_read(
    url: str,
    run_id: str,
    token: str | None,
    *,
    since: str | None = None,
    quiet: float = 2.0,
    deadline: float = 120.0,
    enough: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Read a run's SSE stream from `since` until `end` or `quiet` seconds of silence.

    Returns the payloads of the event frames and the last id seen (a cursor for the next
    read). With `enough`, silence ends the read only once `enough(payloads)` is true
    (else it reconnects from the cursor until the deadline). Independent of the library's
    `subscribe()` on purpose: the ZenML runs the matrix shares stay open, so the read
    ends on silence, not on `end`.
    """
    import json

    import httpx

    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    last = since
    out: list[dict[str, Any]] = []
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        if last:
            headers["Last-Event-ID"] = last
        timeout = httpx.Timeout(30.0, read=quiet)
        try:
            with httpx.stream(
                "GET", f"{url}/api/v1/runs/{run_id}/events/stream", headers=headers, timeout=timeout
            ) as resp:
                resp.raise_for_status()
                frame: dict[str, str] = {}
                for line in _sse_lines(resp):
                    if line.startswith(":"):
                        continue
                    if line:
                        field, _, value = line.partition(":")
                        frame[field] = value[1:] if value.startswith(" ") else value
                        continue
                    name = frame.get("event", "message")
                    if "id" in frame:
                        last = frame["id"]
                    if name == "end":
                        return out, last
                    if name not in {"cursor", "gap", "error", "system"} and "data" in frame:
                        out.append(json.loads(frame["data"])["payload"])
                    frame = {}
        except httpx.ReadTimeout:
            # Silence ends the read only once `enough` holds: a loaded server may pause.
            if enough is None or enough(out):
                return out, last
    if enough is not None:
        return out, last  # incomplete: the caller reports what is missing
    raise AssertionError(f"SSE read of run {run_id} did not go quiet in {deadline}s")


def _sse_lines(resp: Any) -> Iterator[str]:
    """Lines split on LF only: JSON data may carry U+2028 and friends, which str.splitlines
    (and httpx's iter_lines) would treat as line breaks."""
    buf = b""
    for chunk in resp.iter_bytes():
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.rstrip(b"\r").decode("utf-8")


class ZenmlTarget(Target):
    """One case on the real ZenML peer: shares a held run, reads on from a cursor."""

    name = "zenml"

    def __init__(self, peer: Any, held: Any, cursor: list[str | None]) -> None:
        self.url = peer.url
        self.token = peer.token
        self.run_id = held.run_id
        self._cursor = cursor

    def collect(self) -> list[dict[str, Any]]:
        def enough(out: list[dict[str, Any]]) -> bool:
            if self.expect is None:
                return True
            tag, count = self.expect
            return sum(1 for p in out if p.get("tag") == tag) >= count

        payloads, last = sse_read(
            self.url, self.run_id, self.token, since=self._cursor[0], enough=enough, deadline=60.0
        )
        self._cursor[0] = last
        return payloads
