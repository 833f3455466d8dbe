"""POST one batch to a server: the status policy, bounded retries, one Idempotency-Key.

What each status means for the batch (the caller accounts for it):

* 2xx: delivered.
* connection errors, 429, 502, 503, 504: retried with capped exponential backoff and full
  jitter, honouring ``Retry-After``, until ``retry_deadline`` or the caller's ``give_up_at``.
  Every retry of one batch carries the same ``Idempotency-Key``.
* 401: credentials are refreshed once where they can be (ZenML's store), then rejected.
* 501, 405: the server has no streaming; the process mutes itself.
* 400, 403, 404, 413, 422 and other 4xx: rejected, one warning naming the reason.
* other 5xx: failed.
"""

from __future__ import annotations

# encodings.idna and httpcore are what the sender thread would otherwise import on its first
# request; a fork while it is half-way through an import leaves the child a partially
# initialised module ("unknown encoding: idna"). So they are imported here, by the importer.
import encodings.idna  # noqa: F401
import enum
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpcore  # noqa: F401
import httpx

from zstream_mp._version import __version__
from zstream_mp._wire import (
    AUTHORIZATION,
    IDEMPOTENCY_KEY,
    RETRY_AFTER,
    bearer,
    describe_detail,
    events_url,
    parse_retry_after,
)

logger = logging.getLogger("zstream_mp")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MUTE_STATUSES = frozenset({405, 501})
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
RETRY_AFTER_CAP = 30.0
MIN_RETRY_WAIT = 0.05
_LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"
    MUTED = "muted"


@dataclass
class Result:
    outcome: Outcome
    attempts: int
    status: int | None = None
    reason: str = ""


class Transport:
    """One process's HTTP client; never shared across a fork (the owner drops it)."""

    def __init__(
        self,
        request_timeout: float,
        retry_deadline: float,
        refresh_token: Callable[[str], str | None] | None = None,
    ) -> None:
        self._timeout = httpx.Timeout(request_timeout, connect=min(request_timeout, 3.0))
        self._retry_deadline = retry_deadline
        self._refresh_token = refresh_token
        self._clients: dict[bool, httpx.Client] = {}
        self._tokens: dict[tuple[str, str | None], str] = {}
        """Tokens refreshed after a 401, by (server, the token the context gave)."""

    def _http(self, server: str) -> httpx.Client:
        """The client for ``server``'s scheme, created on first use in this process.

        Plain-HTTP servers get a client without a TLS context: building one loads the CA
        bundle (~50 ms and ~3 MB per process), which every short-lived pool worker would
        pay and every fork would copy.
        """
        secure = server.startswith("https://")
        client = self._clients.get(secure)
        if client is None:
            transport = None if secure else httpx.HTTPTransport(verify=False, limits=_LIMITS)
            client = httpx.Client(
                timeout=self._timeout,
                headers={
                    "User-Agent": f"zstream-mp/{__version__}",
                    "Content-Type": "application/json",
                },
                limits=_LIMITS,
                transport=transport,
            )
            self._clients[secure] = client
        return client

    def post(
        self,
        server: str,
        run_id: str,
        token: str | None,
        body: bytes,
        give_up_at: Callable[[], float],
        idempotency_key: str | None = None,
    ) -> Result:
        """Send ``body`` until it is delivered, refused, or the time is up.

        ``idempotency_key`` is the caller's stable key for this batch (a spooled batch keeps
        its key across processes); without one, a fresh key is used for all its retries.
        """
        url = events_url(server, run_id)
        headers = {IDEMPOTENCY_KEY: idempotency_key or str(uuid.uuid4())}
        given = token
        token = self._tokens.get((server, given), token)
        refreshed = False
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            if token:
                headers[AUTHORIZATION] = bearer(token)
            retry_after: float | None = None
            try:
                response = self._http(server).post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                status: int | None = None
                reason = f"{type(exc).__name__}"
            else:
                status = response.status_code
                reason = _reason(response)
                if status < 300:
                    return Result(Outcome.DELIVERED, attempt, status)
                if status in MUTE_STATUSES:
                    return Result(Outcome.MUTED, attempt, status, reason)
                if status == 401 and not refreshed and self._refresh_token is not None:
                    refreshed = True
                    fresh = self._refresh_token(server)
                    if fresh and fresh != token:
                        token = self._tokens[(server, given)] = fresh
                        continue
                if status not in RETRY_STATUSES:
                    outcome = Outcome.REJECTED if status < 500 else Outcome.FAILED
                    return Result(outcome, attempt, status, reason)
                retry_after = _retry_after(response)
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.random()
            if retry_after is not None:
                delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
            # Wait what the server asked for, but never past the deadline: the last try is
            # made at the deadline rather than given up in advance.
            remaining = min(started + self._retry_deadline, give_up_at()) - time.monotonic()
            if remaining <= MIN_RETRY_WAIT:
                return Result(Outcome.FAILED, attempt, status, reason)
            time.sleep(min(delay, remaining - MIN_RETRY_WAIT / 2))


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get(RETRY_AFTER))


def _reason(response: httpx.Response) -> str:
    """A short, payload-free reason: ZenML's string details, never a 422's echo of input."""
    status = response.status_code
    text = f"HTTP {status}"
    if status in (400, 403, 404, 413, 501):
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, (str, list)):
            text += f" {describe_detail(detail)[:200]}"
    elif status == 422:
        text += " (the server refused the batch's shape)"
    return text
