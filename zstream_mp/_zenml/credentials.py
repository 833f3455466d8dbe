"""ZenML's REST store URL and bearer token, cached per process, and the re-login after a 401.

The store's URL and token are the expensive part of a step's identity, so they are cached
per process (an at-fork hook and a PID check give a forked child its own) and rechecked
every `TTL` seconds so that ZenML's own token refresh is picked up. ZenML's token is only
ever paired with ZenML's own URL, so it never reaches another server. A local SQL store
gives `server=None`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TTL", "Credentials", "current", "forget", "load", "norm", "refresh_token", "reset"]

_log = logging.getLogger("zstream_mp._zenml")

TTL = 30.0
"""Seconds cached credentials stand before they are read from ZenML's store again."""
_REFRESH_LOCK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Credentials:
    """The ZenML store's URL and bearer token (both None for a local SQL store)."""

    server: str | None
    token: str | None = field(repr=False)
    checked_at: float = 0.0


current: Credentials | None = None
"""This process's cached credentials; replaced (never changed) by a recheck or a re-login,
so a caller may compare by identity."""
_lock = threading.Lock()
_pid = os.getpid()


def reset() -> None:
    """Forget the parent's credentials in a forked child (swaps references only)."""
    global current, _lock, _pid
    current = None
    _lock = threading.Lock()
    _pid = os.getpid()


def forget() -> None:
    """Read the credentials afresh on the next lookup (a step may change them first)."""
    global current
    with _lock:
        current = None


def norm(url: str | None) -> str | None:
    """A server URL without its trailing slashes, as contexts carry it."""
    return url.rstrip("/") if url else None


def load() -> Credentials:
    """The cached credentials, read from ZenML's store when missing or older than `TTL`."""
    if _pid != os.getpid():  # a fork that skipped the hooks
        reset()
    creds = current
    if creds is not None and time.monotonic() - creds.checked_at < TTL:
        return creds
    return _reload()


def _reload() -> Credentials:
    global current
    with _lock:
        creds = current
        if creds is None or time.monotonic() - creds.checked_at >= TTL:
            creds = current = _read(creds)
    return creds


def _read(previous: Credentials | None) -> Credentials:
    now = time.monotonic()
    try:
        store = _zen_store()
    except Exception as exc:
        _log.debug("ZenML store unavailable: %s", exc)
        return Credentials(None, None, now)
    if not _is_rest(store):
        return Credentials(None, None, now)
    token = _store_token(store, allow_login=previous is None or previous.token is None)
    if token is None and previous is not None:
        token = previous.token
    return Credentials(norm(str(store.url)), token, now)


def _zen_store() -> Any:
    """The client's zen store (already built inside a step: cheap)."""
    from zenml.config.global_config import GlobalConfiguration

    return GlobalConfiguration().zen_store


def _is_rest(store: Any) -> bool:
    return str(getattr(getattr(store, "type", None), "value", "")) == "rest"


def _api_key(url: str) -> str | None:
    """A configured ZENKEY_... API key; 0.98.0 accepts it directly as a bearer token."""
    try:
        from zenml.login.credentials_store import get_credentials_store

        key = get_credentials_store().get_api_key(url)
        return str(key) if key else None
    except Exception as exc:
        _log.debug("no ZenML API key for %s: %s", url, exc)
        return None


def _store_token(store: Any, *, allow_login: bool) -> str | None:
    """The store's current access token.

    With `allow_login` False (the publish path) no HTTP login is made: an expired token is
    left to the transport's 401 path, which runs off the caller's thread.
    """
    url = str(store.url)
    held = getattr(store, "_api_token", None)
    if held is not None and not getattr(held, "expired", True):
        return str(held.access_token)
    if allow_login or held is None:
        try:
            token = store.get_or_generate_api_token()
            if token:
                return str(token)
        except Exception as exc:
            _log.debug("ZenML store could not produce an access token: %s", exc)
    return _api_key(url)


def _reauthenticate(store: Any) -> str | None:
    """Force a fresh login through the store, if its configured credentials allow one."""
    from zenml.login.credentials_store import get_credentials_store

    url = str(store.url)
    if not get_credentials_store().can_login(url):
        # A device-flow or workload token cannot be regenerated; forcing would
        # only erase it from ZenML's credentials file.
        return _api_key(url)
    lock = getattr(store, "_session_lock", None)
    acquired = lock.acquire(timeout=_REFRESH_LOCK_TIMEOUT) if lock is not None else False
    if lock is not None and not acquired:
        _log.debug("ZenML session lock busy; not re-authenticating")
        return None
    try:
        store.authenticate(force=True)
        token = store.get_or_generate_api_token()
        return str(token) if token else None
    finally:
        if acquired and lock is not None:
            lock.release()


def refresh_token(server: str) -> str | None:
    """A fresh bearer token for `server` from ZenML's store, after a 401.

    None when `server` is not ZenML's store URL or no new token can be had. If ZenML
    already holds a newer token than the one handed out, that one is returned without
    logging in again; otherwise one forced login is made. Never raises.
    """
    global current
    try:
        if "zenml" not in sys.modules:
            return None
        if _pid != os.getpid():
            reset()
        store = _zen_store()
        if not _is_rest(store) or norm(str(store.url)) != norm(server):
            return None
        with _lock:
            handed_out = current.token if current else None
        # Network work stays outside the lock so publishers are never held up.
        fresh = _store_token(store, allow_login=True)
        token = fresh if fresh and fresh != handed_out else _reauthenticate(store)
        if token is None or token == handed_out:
            return None
        with _lock:
            current = Credentials(norm(str(store.url)), token, time.monotonic())
        return token
    except Exception as exc:
        _log.debug("ZenML re-authentication failed: %s", exc, exc_info=True)
        return None
