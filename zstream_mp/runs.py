"""Runs on zstream-mp's own server: create, end, inspect and list them from Python.

A ZenML server learns about runs from its database; `zstream-mp serve` has none, so these
helpers (and `zstream-mp runs`) manage them. Each call is one short HTTP request; a
refusal raises the `SubscribeError` subclass of its status (`RunNotFoundError` for an
unknown run), an unreachable server `ServerUnavailableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx

from zstream_mp._settings import env_token, server_or_default
from zstream_mp._wire import (
    AUTHORIZATION,
    bearer,
    describe_detail,
    describe_failure,
    detail_of,
    run_end_url,
    run_url,
    runs_url,
)
from zstream_mp.errors import (
    InvalidContextError,
    ServerUnavailableError,
    SubscribeError,
    error_for_status,
)

__all__ = ["RunInfo", "create_run", "end_run", "list_runs", "run_status"]

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class RunInfo:
    """What the server knows about one run.

    `last_event_id` is the newest retained broker id (None for an empty stream);
    `subscribers` counts the SSE connections open on the run right now.
    """

    id: str
    ended: bool
    subscribers: int = 0
    last_event_id: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> RunInfo:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise SubscribeError(f"unexpected answer from the server: {data!r:.200}")
        last = data.get("last_event_id")
        return cls(
            id=data["id"],
            ended=bool(data.get("ended", False)),
            subscribers=int(data.get("subscribers") or 0),
            last_event_id=str(last) if last is not None else None,
        )


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else env_token()
    return {AUTHORIZATION: bearer(token)} if token else {}


def _run_id(run_id: str | UUID) -> str:
    try:
        return str(UUID(str(run_id)))
    except ValueError:
        raise InvalidContextError(f"run id must be a UUID, got {run_id!r}") from None


def _request(method: str, url: str, token: str | None, timeout: float, body: Any = None) -> Any:
    try:
        response = httpx.request(method, url, json=body, headers=_headers(token), timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServerUnavailableError(f"cannot reach {url}: {describe_failure(exc)}") from exc
    if response.status_code >= 300:
        detail = detail_of(response.content)
        error = error_for_status(response.status_code)
        raise error(
            f"server answered {response.status_code}: {describe_detail(detail)}",
            response.status_code,
            detail,
        )
    try:
        return response.json()
    except ValueError as exc:
        raise SubscribeError(f"unexpected answer from {url}: {response.text[:200]!r}") from exc


def create_run(
    server: str | None = None,
    run_id: str | UUID | None = None,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Register a run (a random UUID unless `run_id` is given); returns its id.

    Creating a run that exists already is not an error. `server` and `token` default to
    `ZSTREAM_SERVER` / `ZSTREAM_TOKEN`, the server to `http://127.0.0.1:8237`.
    """
    body = {"id": _run_id(run_id)} if run_id is not None else {}
    data = _request("POST", runs_url(server_or_default(server)), token, timeout, body)
    return RunInfo.from_json(data).id


def end_run(
    server: str | None,
    run_id: str | UUID,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RunInfo:
    """End a run's stream: subscribers get `end` and disconnect. Ending twice is fine."""
    data = _request("POST", run_end_url(server_or_default(server), _run_id(run_id)), token, timeout)
    return RunInfo.from_json(data)


def run_status(
    server: str | None,
    run_id: str | UUID,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RunInfo:
    """A run's state; `RunNotFoundError` when the server has never seen the run."""
    data = _request("GET", run_url(server_or_default(server), _run_id(run_id)), token, timeout)
    return RunInfo.from_json(data)


def list_runs(
    server: str | None = None, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[RunInfo]:
    """Every run the server knows (created, published to or ended), oldest first: the
    server answers a page at a time, and this follows its `next` cursor to the end."""
    base = runs_url(server_or_default(server))
    found: list[RunInfo] = []
    cursor: str | None = None
    while True:
        url = base if cursor is None else f"{base}?{urlencode({'cursor': cursor})}"
        data = _request("GET", url, token, timeout)
        runs = data.get("runs") if isinstance(data, dict) else None
        if not isinstance(runs, list):
            raise SubscribeError(f"unexpected answer from the server: {data!r:.200}")
        found.extend(RunInfo.from_json(item) for item in runs)
        following = data.get("next")
        if not isinstance(following, str) or not following or not runs:
            return found
        cursor = following
