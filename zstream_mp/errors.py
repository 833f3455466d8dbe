"""The errors zstream-mp raises.

Every error raised at a call site subclasses the builtin that ``zenml.streaming`` raises for
the same mistake (``ValueError``, and ``TypeError`` where the mistake is a wrong type), so code
written against ZenML's publisher keeps catching what it caught before.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InvalidContextError",
    "InvalidEventError",
    "PayloadTooLargeError",
    "ReservedKindError",
    "ZStreamError",
]


class ZStreamError(Exception):
    """Base class of every error zstream-mp raises."""


class InvalidEventError(ZStreamError, ValueError, TypeError):
    """An argument of ``publish()`` cannot become a wire event.

    A non-dict payload, a non-str top-level key, a value JSON cannot represent (NaN,
    infinity, sets, bytes, circular references, lone surrogates), a non-int ``index``, a
    non-str ``correlation_id`` or a ``kind`` that is not a one-line string.
    """


class ReservedKindError(ZStreamError, ValueError):
    """The ``kind`` is one of the names the server reserves for its control frames."""


class PayloadTooLargeError(ZStreamError, ValueError):
    """The payload's compact JSON exceeds 65,536 bytes, or the event's envelope 69,632."""


class ConfigurationError(ZStreamError, ValueError):
    """An environment variable or setting holds a value outside its valid range."""


class InvalidContextError(ZStreamError, ValueError):
    """``bind()`` was given a run id, step run id or server that cannot be used."""
