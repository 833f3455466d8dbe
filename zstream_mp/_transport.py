"""POST one batch to a server: the status policy, bounded retries, one Idempotency-Key.

What each status means for the batch (the caller accounts for it):

* 2xx: delivered.
* connection errors, 429, 502, 503, 504: retried with capped exponential backoff and full
  jitter, honouring `Retry-After`, until `retry_deadline` or the caller's `give_up_at`.
  Every retry of one batch carries the same `Idempotency-Key`.
* 401: credentials are refreshed once where they can be (ZenML's store), then rejected.
* 501, 405: the server has no streaming; the process mutes itself.
* 400, 403, 404, 413, 422 and other 4xx: rejected, one warning naming the reason.
* other 5xx: failed (the sender keeps such a batch in the process's spool).

Deadlines hold whatever the server sends. httpx's timeouts apply to each socket operation,
so a server that trickles a byte a second would hold a request for ever; here every connect,
read and write of an attempt is clamped to the attempt's deadline (`_deadline`), which is
itself within the batch's.

Plain-HTTP servers without a proxy are reached over `_http11`, a lean keep-alive client
(a POST through httpx costs the sending thread, which shares the GIL with the caller, about
ten times the CPU); TLS, proxies and a transport given for tests go through httpx. Both
answer the same way (`_http11.Answer`, `AttemptFailed`), so the policy above is one.

The httpx client is built in the sender thread, once per process, inside the fork barrier
(`_forksafe.fork_barrier`): building a TLS context initialises OpenSSL, and a child forked
while another thread holds OpenSSL's locks would block on its own first TLS context for
ever. Plain-HTTP servers get a client that needs no TLS context at all.

Nothing here logs per request: httpx's `HTTP Request: …` line (INFO) and httpcore's trace
lines (DEBUG) are filtered out for the sender's own requests, so a ZenML step's captured log
holds the lines that matter (failures, muting) and none per batch.
"""

from __future__ import annotations

# encodings.idna, httpcore and certifi are what the sender thread would otherwise import on
# its first request; a fork while it is half-way through an import leaves the child a
# partially initialised module ("unknown encoding: idna"). So the importer imports them.
import encodings.idna  # noqa: F401
import enum
import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import certifi  # noqa: F401  (httpx.create_ssl_context() imports it on first use)
import httpcore
import httpx

from zstream_mp import _deadline, _http11, _quiet
from zstream_mp._forksafe import fork_barrier
from zstream_mp._version import __version__
from zstream_mp._wire import (
    AUTHORIZATION,
    IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
    RETRY_AFTER,
    bearer,
    describe_detail,
    events_url,
    parse_retry_after,
)
from zstream_mp.errors import AttemptFailed, UnsendableHeader

logger = logging.getLogger("zstream_mp")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MUTE_STATUSES = frozenset({405, 501})
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
RETRY_AFTER_CAP = 30.0
MIN_RETRY_WAIT = 0.05
CONNECT_TIMEOUT_CAP = 3.0
SPILL_GRACE = 1.0
"""Seconds an attempt may outlive its process's exit deadline (see `post`)."""
_CONTENT_ENCODING = "content-encoding"
_REPLAYED = IDEMPOTENT_REPLAYED.lower()
_RETRY_AFTER = RETRY_AFTER.lower()
"""Answer header names as both clients look them up (the lean one keeps them lower case;
httpx's headers ignore case)."""
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)
"""Failures that prove the request never reached the server."""
_LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)
RESPONSE_BODY_MAX = 64 * 1024
"""Bytes of a response body read (ZenML's answers are a few hundred); the rest is never
read and the connection is dropped, so a broken server costs bounded memory."""
UNSENDABLE = (
    "the request cannot be sent: a header value (the token?) holds a character HTTP does not allow"
)


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
    maybe_landed: bool = False
    """Some attempt may have reached the server without an answer (a read timeout, a dropped
    connection, a 5xx): a batch that is not delivered may still be stored there."""
    deduplicates: bool = False
    """The server said it honours the Idempotency-Key (`IDEMPOTENT_REPLAYED`)."""


class Observer(Protocol):
    """Told about each attempt as it happens, so counters and warnings never lag."""

    def attempt_failed(self, server: str, reason: str, will_retry: bool) -> None: ...

    def delivered(self, server: str) -> None: ...


class _SenderTransport(httpx.HTTPTransport):
    """httpx's transport with the pool built here: no TLS context unless one is given,
    and the attempt deadline enforced on every socket operation."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        # Not super().__init__(): it builds a TLS context even with verify=False
        # (~30 ms for the first in a process, ~3 MB, and OpenSSL locks a fork can inherit).
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=_LIMITS.max_connections,
            max_keepalive_connections=_LIMITS.max_keepalive_connections,
            keepalive_expiry=_LIMITS.keepalive_expiry,
            network_backend=_deadline.DeadlineBackend(),
        )


def build_client(
    server: str,
    timeout: httpx.Timeout,
    headers: dict[str, str] | None = None,
    http_transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An HTTP client for `server`'s scheme, built where no fork can land, with no TLS
    context for plain HTTP. Every client the publisher's threads use is built here."""
    secure = server.startswith("https://")
    with fork_barrier():
        ssl_context = httpx.create_ssl_context() if secure else None
        client = httpx.Client(
            timeout=timeout,
            headers={"User-Agent": f"zstream-mp/{__version__}", **(headers or {})},
            transport=http_transport or _SenderTransport(ssl_context),
        )
    _quiet.install()
    return client


class Transport:
    """One process's HTTP clients; never shared across a fork (the owner drops them)."""

    def __init__(
        self,
        request_timeout: float,
        retry_deadline: float,
        refresh_token: Callable[[str], str | None] | None = None,
        observer: Observer | None = None,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._request_timeout = request_timeout
        self._timeout = httpx.Timeout(
            request_timeout, connect=min(request_timeout, CONNECT_TIMEOUT_CAP)
        )
        self._retry_deadline = retry_deadline
        self._refresh_token = refresh_token
        self._observer = observer
        self._http_transport = http_transport
        """Used instead of the sender's own (tests: `httpx.MockTransport`)."""
        self._clients: dict[bool, httpx.Client] = {}
        self._lean: _http11.Client | None = None
        self._lean_usable: dict[str, bool] = {}
        """Whether the lean client serves each server (`_http11.usable_for`)."""
        self._tokens: dict[tuple[str, str | None], str] = {}
        """Tokens refreshed after a 401, by (server, the token the context gave)."""

    @property
    def http_transport(self) -> httpx.BaseTransport | None:
        """The transport given instead of the sender's own (tests), for the other requests
        a deliverer makes (reading a stream) to go the same way."""
        return self._http_transport

    def _http(self, server: str) -> httpx.Client:
        """The client for `server`'s scheme, created on first use in this process."""
        secure = server.startswith("https://")
        client = self._clients.get(secure)
        if client is None:
            client = build_client(
                server,
                self._timeout,
                {"Content-Type": "application/json", "Accept-Encoding": "identity"},
                self._http_transport,
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
        grace: float = SPILL_GRACE,
    ) -> Result:
        """Send `body` until it is delivered, refused, or the time is up.

        `idempotency_key` is the caller's stable key for this batch (a spooled batch keeps
        its key across processes); without one, a fresh key is used for all its retries.
        `grace`: seconds an attempt may outlive `give_up_at()`. The sender's attempts do
        (`SPILL_GRACE`), so the exit spill finds its batch still unsettled; a deliverer of a
        spool passes 0: nobody spills for it, and its caller's budget is the deadline.
        """
        url = events_url(server, run_id)
        headers = {IDEMPOTENCY_KEY: idempotency_key or str(uuid.uuid4())}
        given = token
        token = self._tokens.get((server, given), token)
        refreshed = False
        batch_deadline = time.monotonic() + self._retry_deadline
        attempt = 0
        maybe_landed = False
        while True:
            attempt += 1
            if token:
                headers[AUTHORIZATION] = bearer(token)
            # A process that is leaving spools what is unsent at its exit deadline, the batch
            # on the wire included; this attempt runs a little past that point so that it is
            # still unsettled (and so spooled, not dropped) when the spill takes it.
            deadline = min(batch_deadline, give_up_at() + grace)
            retry_after: float | None = None
            status: int | None = None
            attempt_deadline = min(deadline, time.monotonic() + self._request_timeout)
            try:
                answer = self._attempt(server, url, body, headers, attempt_deadline)
            except UnsendableHeader:
                # the request itself cannot be written (a header value HTTP refuses): every
                # retry would fail alike, and the library's message quotes the header
                return Result(Outcome.REJECTED, attempt, None, UNSENDABLE)
            except AttemptFailed as exc:
                reason = str(exc)
                maybe_landed = maybe_landed or exc.sent
            else:
                status = answer.status
                reason = _reason(status, answer.head, answer.headers.get(_CONTENT_ENCODING))
                if status < 300:
                    self._tell_delivered(server)
                    dedupes = _REPLAYED in answer.headers
                    return Result(Outcome.DELIVERED, attempt, status, deduplicates=dedupes)
                if status in MUTE_STATUSES:
                    return Result(Outcome.MUTED, attempt, status, reason)
                if status == 401 and not refreshed and self._refresh_token is not None:
                    refreshed = True
                    fresh = self._refresh_token(server)
                    if fresh and fresh != token:
                        token = self._tokens[(server, given)] = fresh
                        continue
                maybe_landed = maybe_landed or (status >= 500 and status not in (429, 503))
                if status not in RETRY_STATUSES:
                    outcome = Outcome.REJECTED if status < 500 else Outcome.FAILED
                    return Result(outcome, attempt, status, reason, maybe_landed)
                retry_after = parse_retry_after(answer.headers.get(_RETRY_AFTER))
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.random()
            if retry_after is not None:
                delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
            # Wait what the server asked for, but never past the deadline: the last try is
            # made at the deadline rather than given up in advance.
            remaining = min(batch_deadline, give_up_at()) - time.monotonic()
            will_retry = remaining > MIN_RETRY_WAIT
            self._tell_failed(server, reason, will_retry)
            if not will_retry:
                return Result(Outcome.FAILED, attempt, status, reason, maybe_landed)
            time.sleep(min(delay, remaining - MIN_RETRY_WAIT / 2))

    def _attempt(
        self, server: str, url: str, body: bytes, headers: dict[str, str], deadline: float
    ) -> _http11.Answer:
        """One POST, held to `deadline`: over the lean client where it serves `server`,
        else over httpx. Raises `AttemptFailed` or `UnsendableHeader`."""
        lean = self._lean_for(server)
        if lean is not None:
            return lean.post(url, headers, body, deadline, RESPONSE_BODY_MAX)
        try:
            client = self._http(server)
            with (
                _quiet.requests(),
                _deadline.within(deadline),
                client.stream("POST", url, content=body, headers=headers) as response,
            ):
                head = _read_at_most(response, RESPONSE_BODY_MAX)
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            raise UnsendableHeader() from None
        except httpx.HTTPError as exc:
            text = str(exc)
            raise AttemptFailed(
                type(exc).__name__, text, sent=not isinstance(exc, _NOT_SENT)
            ) from None
        return _http11.Answer(response.status_code, response.headers, head)

    def _lean_for(self, server: str) -> _http11.Client | None:
        """The lean client, where it carries requests to `server` as httpx would."""
        usable = self._lean_usable.get(server)
        if usable is None:
            usable = self._http_transport is None and _http11.usable_for(server)
            if len(self._lean_usable) >= 64:
                self._lean_usable.clear()
            self._lean_usable[server] = usable
        if not usable:
            return None
        if self._lean is None:
            self._lean = _http11.Client(
                f"zstream-mp/{__version__}", min(self._request_timeout, CONNECT_TIMEOUT_CAP)
            )
        return self._lean

    def _tell_failed(self, server: str, reason: str, will_retry: bool) -> None:
        if self._observer is not None:
            self._observer.attempt_failed(server, reason, will_retry)

    def _tell_delivered(self, server: str) -> None:
        if self._observer is not None:
            self._observer.delivered(server)


def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """Up to `limit` raw bytes of the body; more than that is left unread."""
    if response.is_stream_consumed:  # a body read already (an in-memory transport)
        return response.content[:limit]
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _reason(status: int, head: bytes, encoding: str | None) -> str:
    """A short, payload-free reason: ZenML's string details, never a 422's echo of input."""
    text = f"HTTP {status}"
    if status in (400, 403, 404, 413, 501):
        try:
            detail = json.loads(head).get("detail") if not encoding else None
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, (str, list)):
            text += f" {describe_detail(detail)[:200]}"
    elif status == 422:
        text += " (the server refused the batch's shape)"
    return text
