"""Targets of the contract suite: ZenML 0.98.0 (the reference) and our server on both brokers.

Instances are created lazily by `Registry`, shared for the session and stopped at its
end. A target that cannot run here is skipped with its reason, and `note` keeps the reason
for the terminal summary (see conftest.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from helpers import zenml_peer as zpeer
from helpers.contract_sse import capture
from helpers.redis import start_redis
from helpers.servers import NotRunnable, start_server

TARGETS = ("zenml", "ours-memory", "ours-redis")
OUR_TOKEN = "contract-token-0123456789"
_SUMMARY: list[str] = []


def note(reason: str) -> str:
    if reason not in _SUMMARY:
        _SUMMARY.append(reason)
    return reason


@dataclasses.dataclass
class Target:
    """One server under test plus a run on it that accepts events."""

    name: str
    url: str
    token: str | None
    run_id: str
    step_run_id: str
    cursor_style: str  # "redis" (<ms>-<seq>) or "memory" (integers)
    new_run: Callable[[], str] | None = None
    end_run: Callable[[str], None] | None = None
    api_key: str | None = None

    @property
    def is_zenml(self) -> bool:
        return self.name == "zenml"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def events_path(self, run_id: str | None = None) -> str:
        return f"/api/v1/runs/{run_id or self.run_id}/events"

    def stream_path(self, run_id: str | None = None) -> str:
        return f"/api/v1/runs/{run_id or self.run_id}/events/stream"

    def post(
        self, body: bytes, *, run_id: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        h = {"Content-Type": "application/json", **self.auth(), **(headers or {})}
        return httpx.post(self.url + self.events_path(run_id), content=body, headers=h, timeout=30)


class Registry:
    """Lazily started servers, keyed by (target, flavour); everything stopped at close()."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Target] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._stack = contextlib.ExitStack()

    def close(self) -> None:
        self._stack.close()
        zpeer.stop_started_peers()

    def _get(self, name: str, flavour: str, make: Callable[[], Target]) -> Target:
        key = (name, flavour)
        if key in self._errors:
            pytest.skip(self._errors[key])
        if key not in self._cache:
            try:
                self._cache[key] = make()
            except (zpeer.PeerUnavailable, NotRunnable) as exc:
                self._errors[key] = note(f"[{name}/{flavour}] cannot run: {exc}")
                pytest.skip(self._errors[key])
        return self._cache[key]

    # ---------------------------------------------------------------- zenml
    def _zenml(self, broker: str = "redis") -> Target:
        peer = zpeer.ensure_peer(broker)
        if broker == "off":
            # Its own database knows no runs; 501 is decided before the run lookup.
            return Target(
                "zenml", peer.url, peer.token, str(uuid.uuid4()), str(uuid.uuid4()), "redis"
            )
        held = self._stack.enter_context(zpeer.held_run(peer))
        return Target(
            "zenml",
            peer.url,
            peer.token,
            held.run_id,
            held.step_run_id,
            "redis",
            api_key=peer.api_key,
        )

    # ---------------------------------------------------------------- ours
    def _ours(self, name: str, **opts: object) -> Target:
        broker = "memory"
        if name == "ours-redis":
            redis = start_redis()
            self._stack.callback(redis.stop)
            broker = redis.url
        server = start_server(broker=broker, token=OUR_TOKEN, **opts)
        self._stack.callback(server.stop)
        run_id = str(uuid.uuid4())
        if not opts.get("disabled"):
            run_id = server.create_run()
        return Target(
            name,
            server.url,
            OUR_TOKEN,
            run_id,
            str(uuid.uuid4()),
            "redis" if name == "ours-redis" else "memory",
            new_run=server.create_run,
            end_run=server.end_run,
        )

    def main(self, name: str) -> Target:
        """The shared instance of `name` with a run that accepts events."""
        return self._get(
            name, "main", lambda: self._zenml() if name == "zenml" else self._ours(name)
        )

    def strict(self, name: str) -> Target:
        """An instance that answers 404 for unknown runs (ZenML always does)."""
        if name == "zenml":
            return self.main(name)
        return self._get(name, "strict", lambda: self._ours(name, strict_runs=True))

    def disabled(self, name: str) -> Target:
        """An instance with streaming disabled (ZenML: a second peer with broker off)."""
        return self._get(
            name,
            "disabled",
            lambda: self._zenml("off") if name == "zenml" else self._ours(name, disabled=True),
        )

    @contextlib.contextmanager
    def down(self, name: str) -> Iterator[Target]:
        """An instance whose broker is down for the duration of the block."""
        if name == "ours-memory":
            pytest.skip("the memory broker lives in the server process and cannot be down")
        if name == "zenml":
            base = self.main("zenml")
            peer = zpeer.ensure_peer("redis")
            with zpeer.held_run(peer) as held:
                tgt = dataclasses.replace(base, run_id=held.run_id, step_run_id=held.step_run_id)
                try:
                    with zpeer.redis_down(peer):
                        yield tgt
                finally:
                    _wait_broker_back(tgt)
            return
        try:
            redis = start_redis()
        except NotRunnable as exc:
            pytest.skip(note(f"[{name}/down] cannot run: {exc}"))
        try:
            try:
                server = start_server(broker=redis.url, token=OUR_TOKEN)
            except NotRunnable as exc:
                pytest.skip(note(f"[{name}/down] cannot run: {exc}"))
            try:
                run_id = server.create_run()
                redis.kill()
                yield Target(name, server.url, OUR_TOKEN, run_id, str(uuid.uuid4()), "redis")
            finally:
                server.stop()
        finally:
            redis.stop()


def _wait_broker_back(tgt: Target, budget: float = 30.0) -> None:
    """After a redis restart, post until the server's pool has reconnected."""
    body = json.dumps({"events": [{"pipeline_run_id": tgt.run_id, "kind": "recovered"}]}).encode()
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        try:
            if tgt.post(body).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    # Pooled reader connections are stale after the restart; each fails once with a gap.
    clean = 0
    while clean < 3 and time.monotonic() < deadline:
        cap = capture(tgt.url, tgt.stream_path() + "?since=0-0", tgt.auth(), frames=1, timeout=5)
        clean = clean + 1 if cap.frames() and b"event: gap" not in cap.body else 0
