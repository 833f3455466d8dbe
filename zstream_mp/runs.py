"""Runs on zstream-mp's own server: create, end, inspect and list them from Python.

A ZenML server learns about runs from its database; ``zstream-mp serve`` has none, so these
helpers (and ``zstream-mp runs``) manage them. Each call is one short HTTP request; a
refusal raises the ``SubscribeError`` subclass of its status (``RunNotFoundError`` for an
unknown run), an unreachable server ``ServerUnavailableError``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx

from zstream_mp._settings import env_token
from zstream_mp._wire import (
    AUTHORIZATION,
    DEFAULT_SERVER,
    ENV_SERVER,
    bearer,
    describe_detail,
    run_end_url,
    run_url,
    runs_url,
)
from zstream_mp.errors import (
    AuthenticationError,
    InvalidContextError,
    InvalidRequestError,
    PermissionDeniedError,
    RunNotFoundError,
    ServerUnavailableError,
    StreamingDisabledError,
    SubscribeError,
)

__all__ = ["RunInfo", "create_run", "end_run", "list_runs", "run_status"]

DEFAULT_TIMEOUT = 30.0
_BY_STATUS: dict[int, type[SubscribeError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: RunNotFoundError,
    422: InvalidRequestError,
    501: StreamingDisabledError,
}


def _error_for(status: int) -> type[SubscribeError]:
    """The error of a refusal with this status; other 5xx mean the server is unwell."""
    if status >= 500 and status != 501:
        return ServerUnavailableError
    return _BY_STATUS.get(status, SubscribeError)


@dataclass(frozen=True)
class RunInfo:
    """What the server knows about one run.

    ``last_event_id`` is the newest retained broker id (None for an empty stream);
    ``subscribers`` counts the SSE connections open on the run right now.
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


def _server(server: str | None) -> str:
    return (server or os.environ.get(ENV_SERVER) or DEFAULT_SERVER).rstrip("/")


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else env_token()
    return {AUTHORIZATION: bearer(token)} if token else {}


def _run_id(run_id: str | UUID) -> str:
    try:
        return str(UUID(str(run_id)))
    except ValueError:
        raise InvalidContextError(f"run id must be a UUID, got {run_id!r}") from None


def _detail_of(response: httpx.Response) -> Any:
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return response.text[:500]
    return body.get("detail", body) if isinstance(body, dict) else body


def _request(method: str, url: str, token: str | None, timeout: float, body: Any = None) -> Any:
    try:
        response = httpx.request(method, url, json=body, headers=_headers(token), timeout=timeout)
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ServerUnavailableError(f"cannot reach {url}: {reason}") from exc
    if response.status_code >= 300:
        detail = _detail_of(response)
        error = _error_for(response.status_code)
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
    """Register a run (a random UUID unless ``run_id`` is given); returns its id.

    Creating a run that exists already is not an error. ``server`` and ``token`` default to
    ``ZSTREAM_SERVER`` / ``ZSTREAM_TOKEN``, the server to ``http://127.0.0.1:8237``.
    """
    body = {"id": _run_id(run_id)} if run_id is not None else {}
    data = _request("POST", runs_url(_server(server)), token, timeout, body)
    return RunInfo.from_json(data).id


def end_run(
    server: str | None,
    run_id: str | UUID,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RunInfo:
    """End a run's stream: subscribers get ``end`` and disconnect. Ending twice is fine."""
    data = _request("POST", run_end_url(_server(server), _run_id(run_id)), token, timeout)
    return RunInfo.from_json(data)


def run_status(
    server: str | None,
    run_id: str | UUID,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RunInfo:
    """A run's state; ``RunNotFoundError`` when the server has never seen the run."""
    data = _request("GET", run_url(_server(server), _run_id(run_id)), token, timeout)
    return RunInfo.from_json(data)


def list_runs(
    server: str | None = None, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[RunInfo]:
    """Every run the server knows (created, published to or ended), oldest first: the
    server answers a page at a time, and this follows its ``next`` cursor to the end."""
    base = runs_url(_server(server))
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
