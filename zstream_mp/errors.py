"""The errors zstream-mp raises, in one hierarchy.

    ZStreamError
     ├── InvalidEventError        (ValueError, TypeError)  publish(): an argument cannot be sent
     ├── ReservedKindError        (ValueError)             publish(): kind is a control frame's
     ├── PayloadTooLargeError     (ValueError)             publish(): over 65,536 / 69,632 bytes
     ├── ConfigurationError       (ValueError)             a setting or environment variable
     ├── InvalidContextError      (ValueError)             bind(): run id, step or server
     ├── MissingExtraError        (ImportError)            an integration without its framework
     └── SubscribeError                                    subscribe() / the run helpers
          ├── AuthenticationError                          401
          ├── PermissionDeniedError                        403
          ├── RunNotFoundError                             404
          ├── InvalidRequestError  (ValueError)            400 / 422
          ├── StreamingDisabledError                       501
          └── ServerUnavailableError                       unreachable, or 5xx for too long

The package's own errors never reach a caller of the public API: each is caught inside the
package (the server answers ZenML's status for a broker's failure, `publish()` counts a
re-entered first publish as a drop). They live here, beside the public ones, so that no
module catches a class private to another:

    ZStreamError
     ├── Reentered                (RuntimeError)           publish() re-entered while its
     │                                                     process's state is being built
     ├── ServeFailed              (RuntimeError)           a `zstream-mp serve` child did
     │                                                     not come up (demo, benchmarks)
     ├── AttemptFailed            (OSError)                the sender's POST got no complete
     │                                                     answer (the transport retries it)
     ├── UnsendableHeader         (ValueError)             a header value HTTP cannot carry
     ├── StreamCapacityError                               the server's subscriber cap: 503
     ├── ShuttingDownError                                 the server takes no new subscriber: 503
     └── BrokerConnectionError                             the server's broker failed for now:
          └── BrokerFullError                              503, or `gap: outage`; full: 503

Every error raised at a call site subclasses the builtin that `zenml.streaming` raises for
the same mistake (`ValueError`, and `TypeError` where the mistake is a wrong type), so code
written against ZenML's publisher keeps catching what it caught before.
"""

from __future__ import annotations

from typing import Any

# `__all__` names the error classes only; `STATUS_ERRORS` and `error_for_status` serve the
# package's own HTTP clients (the consumer and the run helpers).

__all__ = [
    "AttemptFailed",
    "AuthenticationError",
    "BrokerConnectionError",
    "BrokerFullError",
    "ConfigurationError",
    "InvalidContextError",
    "InvalidEventError",
    "InvalidRequestError",
    "MissingExtraError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Reentered",
    "ReservedKindError",
    "RunNotFoundError",
    "ServeFailed",
    "ServerUnavailableError",
    "ShuttingDownError",
    "StreamCapacityError",
    "StreamingDisabledError",
    "SubscribeError",
    "UnsendableHeader",
    "ZStreamError",
]


class ZStreamError(Exception):
    """Base class of every error zstream-mp raises."""


class InvalidEventError(ZStreamError, ValueError, TypeError):
    """An argument of `publish()` cannot become a wire event.

    A non-dict payload, a non-str top-level key, a value JSON cannot represent (NaN,
    infinity, sets, bytes, circular references, lone surrogates), a non-int `index`, a
    non-str `correlation_id` or a `kind` that is not a one-line string.
    """


class ReservedKindError(ZStreamError, ValueError):
    """The `kind` is one of the names the server reserves for its control frames."""


class PayloadTooLargeError(ZStreamError, ValueError):
    """The payload's compact JSON exceeds 65,536 bytes, or the event's envelope 69,632."""


class ConfigurationError(ZStreamError, ValueError):
    """An environment variable or setting holds a value outside its valid range."""


class InvalidContextError(ZStreamError, ValueError):
    """`bind()` was given a run id, step run id or server that cannot be used."""


class MissingExtraError(ZStreamError, ImportError):
    """An integration was used without its framework installed: the message names the extra
    to install (`pip install 'zstream-mp[ray]'`)."""


class SubscribeError(ZStreamError):
    """The server refused a request; `status` and `detail` are its answer."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class AuthenticationError(SubscribeError):
    """401: no token, or a token the server does not accept."""


class PermissionDeniedError(SubscribeError):
    """403: the token lacks the right for this run."""


class RunNotFoundError(SubscribeError):
    """404: the server does not know this run."""


class InvalidRequestError(SubscribeError, ValueError):
    """400/422: malformed run id, cursor (`since`) or filter."""


class StreamingDisabledError(SubscribeError):
    """501: live event streaming is not enabled on this server."""


class ServerUnavailableError(SubscribeError):
    """The server could not be reached (or kept answering 5xx) for `retry_for` seconds."""


class Reentered(ZStreamError, RuntimeError):
    """The process's state was asked for again while this thread builds it (a signal handler
    that publishes, run in the middle of the process's first publish)."""


class ServeFailed(ZStreamError, RuntimeError):
    """`zstream-mp serve` exited or stayed silent instead of serving; the message says why."""


class AttemptFailed(ZStreamError, OSError):
    """A POST of the sender's own client that got no complete answer.

    `kind` names it as httpx would (`ConnectError`, `ReadTimeout`, ...); `sent` is False only
    when the request provably never reached the server (the connection was never made).
    """

    def __init__(self, kind: str, detail: str, *, sent: bool) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.sent = sent


class UnsendableHeader(ZStreamError, ValueError):
    """The request cannot be written: a header value holds a character HTTP does not allow."""


class StreamCapacityError(ZStreamError):
    """The run (or the whole server) already has the maximum number of subscribers."""

    def __init__(self, scope: str, cap: int) -> None:
        super().__init__(f"{scope} subscriber cap {cap} reached")
        self.scope = scope
        self.cap = cap


class ShuttingDownError(ZStreamError):
    """The server is shutting down and takes no new subscribers."""


class BrokerConnectionError(ZStreamError):
    """Transient broker failure; the server answers 503 or emits `gap: outage` and retries."""


class BrokerFullError(BrokerConnectionError):
    """The broker refuses to hold more (the memory broker's byte cap); the server answers 503."""


STATUS_ERRORS: dict[int, type[SubscribeError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: RunNotFoundError,
    422: InvalidRequestError,
    501: StreamingDisabledError,
}
"""The refusals a subscriber or a run helper raises at once, by status."""


def error_for_status(status: int) -> type[SubscribeError]:
    """The error of an answer with this status; a 5xx other than 501 means the server is
    unwell (`ServerUnavailableError`), any other status the base `SubscribeError`."""
    if status >= 500 and status != 501:
        return ServerUnavailableError
    return STATUS_ERRORS.get(status, SubscribeError)
