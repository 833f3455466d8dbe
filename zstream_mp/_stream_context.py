"""`StreamContext`: where events go, as a frozen, picklable, validated value.

A leaf of the package (it imports only the errors), so that binding, the handoff and the
ZenML integration can all build contexts without importing each other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from zstream_mp.errors import InvalidContextError


@dataclass(frozen=True)
class StreamContext:
    """Where events go: a run (and optionally its step) on a server.

    Frozen and picklable, so it can be handed to a worker explicitly
    (`pool.map(work, ..., initializer=zstream_mp.bind, initargs=(ctx,))`).
    """

    run_id: str
    step_run_id: str | None = None
    step_name: str | None = None
    server: str | None = None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_id", uuid_str(self.run_id, "run_id"))
        if self.step_run_id is not None:
            object.__setattr__(self, "step_run_id", uuid_str(self.step_run_id, "step_run_id"))
        if self.step_name is not None and not isinstance(self.step_name, str):
            kind = type(self.step_name).__name__  # type: ignore[unreachable]
            raise InvalidContextError(f"step_name must be a str, not {kind}")
        if self.server is not None:
            object.__setattr__(self, "server", server_url(self.server))
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise InvalidContextError("token must be a non-empty str")
        if self.token is not None and not (self.token.isascii() and self.token.isprintable()):
            # An HTTP header carries it: anything else fails later, in the sender, per batch.
            raise InvalidContextError("token must be printable ASCII (it is sent in a header)")


@dataclass(frozen=True)
class Destination:
    """A resolved context: the server to POST to, its token and the event prefix, encoded once.

    The token is left out of `repr()` so that debuggers, tracebacks and error trackers
    that capture locals never record it.
    """

    run_id: str
    server: str | None
    token: str | None = field(repr=False)
    prefix: bytes = field(repr=False)
    """`{"pipeline_run_id":…,"step_run_id":…,"step_name":…,"kind":` as compact JSON."""


def uuid_str(value: Any, name: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise InvalidContextError(f"{name} must be a UUID (str or uuid.UUID), got {value!r}")


def server_url(value: Any, *, source: str = "server") -> str:
    """`value` as a server base URL without a trailing slash, or a clear error."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise InvalidContextError(
            f"{source} must be an http:// or https:// URL (for example "
            f"http://127.0.0.1:8237), got {value!r}"
        )
    return value.rstrip("/")
