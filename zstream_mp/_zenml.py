"""Run, step and server identity taken from ZenML itself, and handed to a step's children.

The only module that touches ZenML, and it never imports ZenML itself: a plain process
never pays for (or triggers) a ZenML import. The identity lookup imports nothing: a step
or a dynamic pipeline can only be active if its module is already loaded.

A step's context reaches every child process and thread the step starts, whether or not
the step has published yet. ZenML offers no hook for "a step starts" that a library can
join (step hooks are the user's configuration), so ``watch()`` asks to be told when
ZenML's context modules are imported and wraps ``StepContext.__enter__``/``__exit__``
(and the dynamic-pipeline context's): the least invasive point in ZenML's source
(``zenml/orchestrators/step_runner.py`` enters ``with step_context:`` right before the
user's function runs). On enter the step's context is exported through ``_handoff``
(the environment variable spawn, forkserver, loky and Dask workers copy, and which
threads without a copied ``contextvars`` context fall back to); on exit the previous
export is restored. A before-fork hook exports the forking thread's step, for steps that
run concurrently in threads. The wrappers call ZenML's own methods first and never raise.

When a step ends, what it and the children it started left behind (queued events, spools
of workers whose exit budget ran out) is delivered within one exit budget, before ZenML
marks the run finished and ends its stream (``step_ended``).

Identity is re-read from ZenML's context variables on every call, because the
local orchestrator runs several steps one after another in one process; while the
context object is unchanged the previous answer is returned as is (~0.3 µs). The
expensive part, the REST store's URL and bearer token, is cached per process (an
at-fork hook and a PID check give a forked child its own) and rechecked every
``_CREDENTIALS_TTL`` seconds so that ZenML's own token refresh is picked up.

Server precedence: ``ZSTREAM_SERVER`` (with ``ZSTREAM_TOKEN``) overrides the store
URL; both are read when the step or the credentials change, not on every publish.
ZenML's token is only ever paired with ZenML's own URL, so it never reaches another
server. A local SQL store gives ``server=None``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zstream_mp import _handoff, _import_hook
from zstream_mp._forksafe import before_fork, on_fork_in_child
from zstream_mp._stream_context import StreamContext
from zstream_mp._wire import ENV_SERVER, ENV_TOKEN

__all__ = ["refresh_token", "zenml_context"]

_log = logging.getLogger(__name__)

_STEP_MODULE = "zenml.steps.step_context"
_SIGNAL_HANDLER_MODULE = "zenml.orchestrators.signal_handler"
_DYNAMIC_MODULE = "zenml.execution.pipeline.dynamic.run_context"
_CREDENTIALS_TTL = 30.0
_REFRESH_LOCK_TIMEOUT = 10.0


@dataclass(frozen=True)
class _Credentials:
    """The ZenML store's URL and bearer token (both None for a local SQL store)."""

    server: str | None
    token: str | None = field(repr=False)
    checked_at: float = 0.0


class _ProcessState:
    """Per-process cache; a forked child builds its own (at-fork hook, PID check)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.credentials: _Credentials | None = None
        # Last answer as one tuple (swapped atomically, so threads in different
        # steps never pair one step's owner with another's context): reused while
        # the ZenML context object and the credentials object are the same.
        self.last: tuple[object, _Credentials, StreamContext] | None = None


_state = _ProcessState()


def _after_fork_in_child() -> None:
    global _state
    _state = _ProcessState()
    _release_step_signals()


def _release_step_signals() -> None:
    """Give a forked child back the SIGTERM and SIGINT handlers ZenML's step replaced.

    ZenML's step ``SignalHandler`` (``zenml/orchestrators/signal_handler.py``) is the step
    process's: it asks the server about the run, may mark the step stopped, and raises in
    the main thread. A forked pool worker inherits it, and then ``Pool.terminate()`` can
    hang: the worker's main thread waits in the pool's queue semaphore, the signal lands
    on another thread (OpenTelemetry's log exporter, for one), the Python handler never
    runs, and because a handler is installed the kernel does not end the process either.
    The child gets what the handler replaced (``SIG_DFL`` as a rule), as it would without
    ZenML. One ``sigaction`` per signal, and only when ZenML's handler is the one installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            handler = signal.getsignal(signum)
            owner = getattr(handler, "__self__", None)
            if owner is None or type(owner).__module__ != _SIGNAL_HANDLER_MODULE:
                continue
            replaced = getattr(owner, "_previous", {}).get(signum)
            if replaced is None:
                replaced = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, replaced)
        except (ValueError, OSError, TypeError, AttributeError):
            continue


on_fork_in_child("zenml", _after_fork_in_child)
before_fork("zenml", lambda: _export_active())


def _process_state() -> _ProcessState:
    global _state
    state = _state
    if state.pid != os.getpid():
        state = _state = _ProcessState()
    return state


def _context_var(module_name: str, class_name: str) -> Any:
    """The ContextVar behind a ZenML ``BaseContext`` class, if its module is loaded."""
    module = sys.modules.get(module_name)
    if module is None:
        return None
    cls = getattr(module, class_name, None)
    return getattr(cls, "__context_var__", None)


# The ContextVar objects, found once their modules are loaded (class attributes: stable).
_step_var: Any = None
_dynamic_var: Any = None


def _active_owner() -> object | None:
    """The active StepContext, else the active DynamicPipelineRunContext, else None."""
    global _step_var, _dynamic_var
    var = _step_var
    if var is None:
        var = _step_var = _context_var(_STEP_MODULE, "StepContext")
    owner = var.get(None) if var is not None else None
    if owner is None:
        var = _dynamic_var
        if var is None:
            var = _dynamic_var = _context_var(_DYNAMIC_MODULE, "DynamicPipelineRunContext")
        owner = var.get(None) if var is not None else None
    return owner


def _identity(owner: Any) -> tuple[str, str | None, str | None]:
    """(run id, step run id, step name) of a step or dynamic-run context object."""
    if hasattr(owner, "step_run"):
        return str(owner.pipeline_run.id), str(owner.step_run.id), str(owner.step_name)
    return str(owner.run.id), None, None


def _norm(url: str | None) -> str | None:
    return url.rstrip("/") if url else None


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

    With ``allow_login`` False (the publish path) no HTTP login is made: an
    expired token is left to the transport's 401 path, which runs off the
    caller's thread.
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


def _load_credentials(previous: _Credentials | None) -> _Credentials:
    now = time.monotonic()
    try:
        store = _zen_store()
    except Exception as exc:
        _log.debug("ZenML store unavailable: %s", exc)
        return _Credentials(None, None, now)
    if not _is_rest(store):
        return _Credentials(None, None, now)
    token = _store_token(store, allow_login=previous is None or previous.token is None)
    if token is None and previous is not None:
        token = previous.token
    return _Credentials(_norm(str(store.url)), token, now)


def _credentials(state: _ProcessState) -> _Credentials:
    creds = state.credentials
    if creds is not None and time.monotonic() - creds.checked_at < _CREDENTIALS_TTL:
        return creds
    with state.lock:
        creds = state.credentials
        if creds is None or time.monotonic() - creds.checked_at >= _CREDENTIALS_TTL:
            creds = state.credentials = _load_credentials(creds)
    return creds


def _server_and_token(
    creds: _Credentials, env_server: str | None, env_token: str | None
) -> tuple[str | None, str | None]:
    """Apply ZSTREAM_SERVER / ZSTREAM_TOKEN over ZenML's store."""
    server = _norm(env_server) or creds.server
    if env_token:
        return server, env_token
    if server is not None and server == creds.server:
        return server, creds.token
    return server, None


def zenml_context() -> StreamContext | None:
    """The active ZenML step (or dynamic pipeline run) as a StreamContext, else None.

    Never raises: any failure is logged at debug level and yields None.
    """
    try:
        owner = _active_owner()
        if owner is None:
            return None
        state = _state
        last = state.last
        # Hot path: same context object, same credentials object, still fresh. No
        # syscall (getpid) and no os.environ read: the at-fork hook resets _state.
        if (
            last is not None
            and last[0] is owner
            and last[1] is state.credentials
            and time.monotonic() - last[1].checked_at < _CREDENTIALS_TTL
        ):
            return last[2]
        return _build_context(owner)
    except Exception as exc:
        _log.debug("ZenML context unavailable: %s", exc, exc_info=True)
        return None


def still_valid() -> tuple[Any, object, object, float] | None:
    """What keeps the last answer of ``zenml_context()`` right, for a caller that caches
    what it derived from it: ``(var, owner, record, until)``. The answer stands while
    ``var.get(None) is owner``, ``_state.last is record`` (a new step, a fork or a token
    refresh replaces the record) and ``time.monotonic() < until`` (the credentials' recheck).
    None unless the answer came from a step's context (a dynamic run's is not cached).
    """
    var, last = _step_var, _state.last
    if var is None or last is None or var.get(None) is not last[0]:
        return None
    return var, last[0], last, last[1].checked_at + _CREDENTIALS_TTL


def _build_context(owner: object) -> StreamContext:
    """Resolve ids, credentials and ZSTREAM_SERVER/ZSTREAM_TOKEN for a new context object.

    The environment overrides are read here, i.e. when the step changes or the
    credentials are rechecked, not on every publish (like the core's own destinations).
    """
    state = _process_state()
    creds = _credentials(state)
    run_id, step_run_id, step_name = _identity(owner)
    server, token = _server_and_token(
        creds, os.environ.get(ENV_SERVER) or None, os.environ.get(ENV_TOKEN) or None
    )
    context = StreamContext(
        run_id=run_id, step_run_id=step_run_id, step_name=step_name, server=server, token=token
    )
    state.last = (owner, creds, context)
    return context


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
    """A fresh bearer token for ``server`` from ZenML's store, after a 401.

    Returns None when ``server`` is not ZenML's store URL or no new token can be
    had. If ZenML already holds a newer token than the one handed out, that one
    is returned without logging in again; otherwise one forced login is made.
    Never raises.
    """
    try:
        if "zenml" not in sys.modules:
            return None
        state = _process_state()
        store = _zen_store()
        if not _is_rest(store) or _norm(str(store.url)) != _norm(server):
            return None
        with state.lock:
            handed_out = state.credentials.token if state.credentials else None
        # Network work stays outside the lock so publishers are never held up.
        current = _store_token(store, allow_login=True)
        token = current if current and current != handed_out else _reauthenticate(store)
        if token is None or token == handed_out:
            return None
        with state.lock:
            state.credentials = _Credentials(_norm(str(store.url)), token, time.monotonic())
            state.last = None
        return token
    except Exception as exc:
        _log.debug("ZenML re-authentication failed: %s", exc, exc_info=True)
        return None


# --------------------------------------------------------------------------- step watching

_CONTEXT_CLASSES = {_STEP_MODULE: "StepContext", _DYNAMIC_MODULE: "DynamicPipelineRunContext"}
_MISSING = object()
_previous_exports: dict[int, str | None] = {}
"""What was exported before a step (by id of its context object) entered."""


def watch() -> None:
    """Export each ZenML step's context from the moment it starts (see the module doc)."""
    for module_name in _CONTEXT_CLASSES:
        _import_hook.when_imported(module_name, _instrument)


def _instrument(module: Any) -> None:
    cls = getattr(module, _CONTEXT_CLASSES.get(module.__name__, ""), None)
    if cls is None or cls.__dict__.get("_zstream_watched"):
        return
    enter, exit_ = cls.__enter__, cls.__exit__

    def __enter__(self: Any) -> Any:
        entered = enter(self)
        _entered(self)
        return entered

    def __exit__(self: Any, *exc_info: Any) -> Any:
        try:
            _exited(self)
        finally:
            result = exit_(self, *exc_info)
        return result

    cls.__enter__ = __enter__
    cls.__exit__ = __exit__
    cls._zstream_watched = True
    if _active_owner() is not None:  # imported from inside a running step
        _export_active()


def _entered(owner: object) -> None:
    try:
        context = zenml_context()
        if context is None:
            return
        _previous_exports[id(owner)] = _handoff.exported()
        _handoff.export(context)
        # The step's own publishes read ZenML's credentials afresh, as they would had the
        # step not been watched (the user's code may change them before it publishes).
        state = _process_state()
        with state.lock:
            state.credentials = None
            state.last = None
    except Exception as exc:  # never in ZenML's way
        _log.debug("could not export the step's context: %s", exc, exc_info=True)


step_ended: Callable[[], None] | None = None
"""Set by the package: delivers what a step and its children left, before ZenML ends the
run (and its stream) after the step. Called from the step's own thread; bounded."""


def _exited(owner: object) -> None:
    previous = _previous_exports.pop(id(owner), _MISSING)
    if previous is _MISSING:
        return
    if step_ended is not None and "StepContext" in type(owner).__name__:
        try:
            step_ended()
        except Exception as exc:
            _log.debug("could not deliver what the step left: %s", exc, exc_info=True)
    try:
        _handoff.restore(previous)  # type: ignore[arg-type]
    except Exception as exc:
        _log.debug("could not restore the handoff after a step: %s", exc, exc_info=True)


def _export_active() -> None:
    """Export the calling thread's active step, if any (cheap when already exported)."""
    if "zenml" not in sys.modules:
        return
    try:
        context = zenml_context()
        if context is not None:
            _handoff.export(context)
    except Exception as exc:
        _log.debug("could not export the step's context: %s", exc, exc_info=True)
