"""Which `Host` and `Origin` a request may carry: no DNS rebinding, no cross-site forms.

A page on another site can make a browser send requests to this server (it listens on a
name the browser can reach, often loopback). Two checks, on every server:

* `Host` must name this server: the loopback names, the bind address, or a name added
  with `--allowed-host` (`*` accepts any). A rebinding page's requests carry its own name
  and get 400, so it can read nothing even from an open server.
* A state-changing request (POST, PUT, PATCH, DELETE) with an `Origin` must come from this
  server's own origin (the live page) or an allowed host; others get 403. The run API's
  POSTs also refuse the content types an HTML form can send (415); ZenML's `POST …/events`
  keeps ZenML's 422 for them (such a body can never validate).
"""

from __future__ import annotations

import email.message
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})


def host_name(value: str) -> str | None:
    """The host name of a `Host` value or an origin's netloc, lower case; None if malformed."""
    try:
        name = urlsplit("//" + value.strip()).hostname
    except ValueError:
        return None
    return name.lower().rstrip(".") if name else None


def media_type(content_type: str) -> str:
    message = email.message.Message()
    message["content-type"] = content_type
    return message.get_content_type()


class HostPolicy:
    """The names a request may address this server by."""

    def __init__(self, bind_host: str, allowed: Iterable[str] = ()) -> None:
        extra = {a.strip().lower().strip("[]").rstrip(".") for a in allowed if a.strip()}
        self.any = "*" in extra
        self.extra = frozenset(extra - {"*"})
        names = set(LOOPBACK_NAMES) | self.extra
        bind = bind_host.strip().lower().strip("[]")
        if bind not in _ANY_ADDRESS:
            names.add(bind)
        self.names = frozenset(names)

    def host_ok(self, host: str | None) -> bool:
        """A request without `Host` (HTTP/1.0, no browser sends one) passes."""
        if host is None or self.any:
            return True
        name = host_name(host)
        if name is None:
            return False
        return name in self.names or name.endswith(".localhost") or _is_ipv4_loopback(name)

    def origin_ok(self, origin: str, host: str | None) -> bool:
        """The origin is this server's own (same host and port) or an allowed host."""
        if self.any:
            return True
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file://) and the like
        if host is not None and parts.netloc.lower() == host.strip().lower():
            return True
        name = host_name(parts.netloc)
        return name is not None and name in self.extra


def _is_ipv4_loopback(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


class OriginGuard:
    """ASGI middleware applying `HostPolicy` to every HTTP request (see the module doc)."""

    def __init__(
        self, app: ASGIApp, policy: HostPolicy, form_free_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.policy = policy
        self.form_free_prefixes = tuple(form_free_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        host = _text(headers.get(b"host"))
        refusal: JSONResponse | None = None
        if not self.policy.host_ok(host):
            refusal = JSONResponse(
                {
                    "detail": "Unknown Host; start the server with --allowed-host NAME to accept "
                    "requests addressed to NAME."
                },
                status_code=400,
            )
        elif scope["method"] in _STATE_CHANGING:
            origin = _text(headers.get(b"origin"))
            content_type = _text(headers.get(b"content-type"))
            if origin is not None and not self.policy.origin_ok(origin, host):
                refusal = JSONResponse({"detail": "Cross-origin request refused."}, 403)
            elif (
                content_type is not None
                and scope["path"].startswith(self.form_free_prefixes)
                and media_type(content_type) in FORM_TYPES
            ):
                refusal = JSONResponse({"detail": "Send application/json."}, 415)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
