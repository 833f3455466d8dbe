"""The real ZenML 0.98.0 server as a test peer: start it, authenticate, hold a run open.

ZenML only accepts events for runs it knows, so tests that target it need a real pipeline
run in progress. This module wraps `<repo>/../shared/peers/zenml/start.sh` and a tiny
pipeline whose step waits on a release file, so every ZenML-target test can share one
server and one held run per session.

Stable interface (other test modules import it):

* `peer_available() -> str | None`: `None` when the peer can be tried, else the reason
  it cannot (no start.sh, no Python 3.12+, disabled by `ZSTREAM_ZENML_PEER=0`).
* `ensure_peer(broker="redis") -> Peer`: start (or reuse) a peer and return its URL and
  credentials. `broker` is `redis` (the shared instance on port 8237), `memory` or
  `off` (each a second instance with its own state dir and free port, reusing the venv).
  Raises `PeerUnavailable` with a reason; callers turn that into a loud skip.
* `held_run(peer) -> ContextManager[HeldRun]`: a pipeline run kept in progress until the
  context exits; on exit the step returns, the run ends and ZenML publishes `end`.
* `stop_started_peers()`: stop only the instances this process started.
* `skip_reasons()`: every reason recorded so far, for the terminal summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_DIR = Path(os.environ.get("ZSTREAM_ZENML_PEER_DIR", REPO_ROOT.parent / "shared/peers/zenml"))
VENV = Path(os.environ.get("ZENML_PEER_VENV", "/tmp/zenml-peer"))
DEFAULT_STATE = Path(os.environ.get("ZENML_PEER_STATE", "/tmp/zenml-peer-state"))
DEFAULT_PORT = int(os.environ.get("ZENML_PEER_PORT", "8237"))
DEFAULT_REDIS_PORT = int(os.environ.get("ZENML_PEER_REDIS_PORT", "6399"))
START_TIMEOUT = float(os.environ.get("ZSTREAM_ZENML_START_TIMEOUT", "300"))
PASSWORD = os.environ.get("ZENML_PEER_PASSWORD", "")


class PeerUnavailable(RuntimeError):
    """The ZenML peer cannot be started here; the message says why."""


@dataclasses.dataclass(frozen=True)
class Peer:
    """A running ZenML server: base URL, a user bearer token and a service-account key."""

    url: str
    token: str
    api_key: str
    python: str
    broker: str
    state: Path
    redis_port: int | None

    def __repr__(self) -> str:
        return f"Peer(url={self.url!r}, broker={self.broker!r}, state={str(self.state)!r})"


@dataclasses.dataclass(frozen=True)
class HeldRun:
    """A pipeline run that stays in progress while its `held_run` context is open."""

    run_id: str
    step_run_id: str
    step_name: str


_lock = threading.Lock()
_peers: dict[str, Peer] = {}
_failures: dict[str, str] = {}
_started: list[Path] = []
_reasons: list[str] = []


def _note(reason: str) -> str:
    if reason not in _reasons:
        _reasons.append(reason)
    return reason


def skip_reasons() -> list[str]:
    """Reasons recorded by `peer_available`/`ensure_peer`/`held_run` in this process."""
    return list(_reasons)


def _python_ok(python: str) -> bool:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "True"


def _find_python() -> str | None:
    if os.environ.get("ZENML_PEER_PYTHON"):
        return os.environ["ZENML_PEER_PYTHON"]
    if (VENV / "bin/python").exists() and _python_ok(str(VENV / "bin/python")):
        return str(VENV / "bin/python")
    for name in ("python3.12", "python3.13"):
        found = shutil.which(name)
        if found and _python_ok(found):
            return found
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for cand in sorted(root.glob("3.12*")) + sorted(root.glob("3.13*")):
        exe = cand / "bin/python3"
        if exe.exists() and _python_ok(str(exe)):
            return str(exe)
    return None


def peer_available() -> str | None:
    """Return `None` if the peer can be tried, else a human-readable reason."""
    if os.environ.get("ZSTREAM_ZENML_PEER", "1").lower() in ("0", "off", "no", "false"):
        return _note("ZenML peer disabled by ZSTREAM_ZENML_PEER=0")
    if not (PEER_DIR / "start.sh").exists():
        return _note(f"ZenML peer scripts not found at {PEER_DIR}/start.sh")
    if shutil.which("curl") is None:
        return _note("ZenML peer needs curl (start.sh polls /health with it)")
    if _find_python() is None:
        return _note(
            "no Python 3.12+ interpreter for the ZenML peer venv "
            "(start.sh needs one; 3.11 hangs on SSE replay)"
        )
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _layout(broker: str) -> tuple[Path, int, int | None]:
    """State dir, HTTP port and redis port of the instance serving `broker`."""
    if broker == "redis":
        return DEFAULT_STATE, DEFAULT_PORT, DEFAULT_REDIS_PORT
    state = Path(f"{DEFAULT_STATE}-{broker}")
    port_file = state / "zstream-port"
    running = port_file.exists() and _alive(state / "server.pid")
    port = int(port_file.read_text()) if running else _free_port()
    return state, port, None


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _run_start(broker: str, state: Path, port: int, redis_port: int | None) -> None:
    env = dict(os.environ)
    env.update(
        ZENML_PEER_BROKER=broker,
        ZENML_PEER_STATE=str(state),
        ZENML_PEER_PORT=str(port),
        ZENML_PEER_VENV=str(VENV),
    )
    if redis_port is not None:
        env["ZENML_PEER_REDIS_PORT"] = str(redis_port)
    python = _find_python()
    if python and not (VENV / "bin/python").exists():
        env["ZENML_PEER_PYTHON"] = python
    was_running = _alive(state / "server.pid")
    try:
        out = subprocess.run(
            ["bash", str(PEER_DIR / "start.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"start.sh ({broker}) timed out after {START_TIMEOUT:.0f}s") from exc
    if out.returncode != 0:
        tail = (out.stdout + out.stderr).strip().splitlines()[-6:]
        raise PeerUnavailable(f"start.sh ({broker}) failed rc={out.returncode}: {' | '.join(tail)}")
    if not was_running:
        _started.append(state)
    if broker != "redis":
        (state / "zstream-port").write_text(str(port))
    running = (state / "broker").read_text().strip() if (state / "broker").exists() else "?"
    if running != broker:
        raise PeerUnavailable(
            f"the ZenML peer in {state} runs broker {running!r}, not {broker!r} "
            f"(stop it with ZENML_PEER_STATE={state} {PEER_DIR}/stop.sh)"
        )


def login(url: str, username: str = "default", password: str = PASSWORD) -> str:
    """Bearer access token of a user (form login, like token.sh)."""
    r = httpx.post(
        f"{url}/api/v1/login", data={"username": username, "password": password}, timeout=30
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def _api_key(url: str, token: str, state: Path) -> str:
    cache = state / "api_key"
    if cache.exists() and cache.read_text().strip():
        return cache.read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as c:
        items = c.get("/api/v1/service_accounts", params={"name": "peer-sa"}).json()["items"]
        if items:
            sa_id = items[0]["id"]
        else:
            r = c.post("/api/v1/service_accounts", json={"name": "peer-sa", "active": True})
            r.raise_for_status()
            sa_id = r.json()["id"]
        r = c.post(
            f"/api/v1/service_accounts/{sa_id}/api_keys",
            json={"name": f"peer-key-{int(time.time() * 1000)}"},
        )
        r.raise_for_status()
        key = str(r.json()["body"]["key"])
    fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def ensure_peer(broker: str = "redis") -> Peer:
    """Start (or reuse) the peer serving `broker` and return it; raise PeerUnavailable."""
    with _lock:
        if broker in _peers:
            return _peers[broker]
        if broker in _failures:
            raise PeerUnavailable(_failures[broker])
        reason = peer_available()
        if reason is not None:
            _failures[broker] = reason
            raise PeerUnavailable(reason)
        state, port, redis_port = _layout(broker)
        try:
            _run_start(broker, state, port, redis_port)
            url = f"http://127.0.0.1:{port}"
            token = login(url)
            key = _api_key(url, token, state)
        except PeerUnavailable as exc:
            _failures[broker] = _note(f"ZenML peer ({broker}) unavailable: {exc}")
            raise PeerUnavailable(_failures[broker]) from exc
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            _failures[broker] = _note(f"ZenML peer ({broker}) unusable: {exc!r}")
            raise PeerUnavailable(_failures[broker]) from exc
        peer = Peer(
            url=url,
            token=token,
            api_key=key,
            python=str(VENV / "bin/python"),
            broker=broker,
            state=state,
            redis_port=redis_port,
        )
        _peers[broker] = peer
        return peer


def stop_started_peers() -> None:
    """Stop the instances this process started (by their PID files, via stop.sh)."""
    with _lock:
        while _started:
            state = _started.pop()
            env = dict(os.environ, ZENML_PEER_STATE=str(state))
            subprocess.run(
                ["bash", str(PEER_DIR / "stop.sh")],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            _peers.pop(next((b for b, p in _peers.items() if p.state == state), ""), None)


def redis_down(peer: Peer) -> contextlib.AbstractContextManager[None]:
    """Stop the peer's redis-server for the duration of the block, then restart it."""
    return _redis_down(peer)


@contextlib.contextmanager
def _redis_down(peer: Peer) -> Iterator[None]:
    if peer.redis_port is None:
        raise PeerUnavailable(f"peer {peer.broker} has no redis")
    pidfile = peer.state / "redis.pid"
    pid = int(pidfile.read_text().strip())
    os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    try:
        yield
    finally:
        _run_start(peer.broker, peer.state, int(peer.url.rsplit(":", 1)[1]), peer.redis_port)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


_HELD_PIPELINE = textwrap.dedent(
    '''
    """A one-step pipeline that stays in progress until a release file appears."""
    import json, os, sys, time

    from zenml import pipeline, step
    from zenml.client import Client
    from zenml.steps import get_step_context

    INFO, RELEASE, HOLD_MAX = sys.argv[1], sys.argv[2], float(sys.argv[3])


    @step
    def held_step() -> None:
        ctx = get_step_context()
        info = {"run_id": str(ctx.pipeline_run.id), "step_run_id": str(ctx.step_run.id),
                "step_name": ctx.step_name}
        with open(INFO + ".tmp", "w") as f:
            json.dump(info, f)
        os.replace(INFO + ".tmp", INFO)
        deadline = time.monotonic() + HOLD_MAX
        while not os.path.exists(RELEASE) and time.monotonic() < deadline:
            time.sleep(0.1)


    @pipeline(enable_cache=False)
    def zstream_held_pipeline():
        held_step()


    if __name__ == "__main__":
        if not os.path.isdir(".zen"):
            from pathlib import Path
            Client.initialize(root=Path.cwd())
        zstream_held_pipeline()
    '''
)


def client_env(peer: Peer, workdir: Path) -> dict[str, str]:
    """Environment for a ZenML client process (own config dir) talking to `peer`."""
    return {
        "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin",
        # This checkout first: the peer venv is shared by every checkout on the machine,
        # whichever one installed itself there last.
        "PYTHONPATH": str(REPO_ROOT),
        "HOME": str(workdir / "home"),
        "LANG": "C.UTF-8",
        "ZENML_CONFIG_PATH": str(workdir / "client-config"),
        "ZENML_STORE_URL": peer.url,
        "ZENML_STORE_API_KEY": peer.api_key,
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
        "ZENML_ENABLE_REPO_INIT_WARNINGS": "false",
        "ZENML_DEBUG": "false",
    }


@contextlib.contextmanager
def held_run(
    peer: Peer, *, start_timeout: float = 180.0, hold_max: float = 900.0, end_timeout: float = 60.0
) -> Iterator[HeldRun]:
    """Run a one-step pipeline on `peer` and keep it in progress while the block runs.

    On exit the step is released and the run finishes, so ZenML publishes `end` on its
    stream (about 1 s later, and only if the stream holds at least one event).
    """
    work = Path(tempfile.mkdtemp(prefix="zstream-held-"))
    (work / "repo").mkdir()
    (work / "home").mkdir()
    (work / "repo/held_pipeline.py").write_text(_HELD_PIPELINE)
    info, release = work / "run.json", work / "release"
    log = open(work / "pipeline.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [peer.python, "held_pipeline.py", str(info), str(release), str(hold_max)],
        cwd=work / "repo",
        env=client_env(peer, work),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while not info.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (work / "pipeline.log").read_text(errors="replace")[-1500:]
                raise PeerUnavailable(
                    _note(f"held ZenML run did not start (rc={proc.poll()}): {tail}")
                )
            time.sleep(0.1)
        data = json.loads(info.read_text())
        yield HeldRun(
            run_id=data["run_id"], step_run_id=data["step_run_id"], step_name=data["step_name"]
        )
    finally:
        release.touch()
        try:
            proc.wait(timeout=end_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if proc.returncode == 0:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(
                f"[zenml-peer] held pipeline exited rc={proc.returncode}; log in {work}",
                file=sys.stderr,
            )
