"""Which run, step and server an event belongs to, and how child processes learn it.

Resolution order, per ``publish()``: an explicit ``bind()`` in this process, then ZenML's
step context, then ZenML's dynamic-pipeline context (both only when ``zenml`` is already
imported), then the context a parent process handed down through ``ZSTREAM_CONTEXT``.
``ZSTREAM_SERVER`` / ``ZSTREAM_TOKEN`` fill in a server and token the context lacks and
override the ZenML client's store, so a ZenML step can publish to another server.

The handoff is an environment variable, so spawn, forkserver, loky, Ray and Dask workers
inherit it; a token travels in a 0600 file whose path the variable names, never in argv,
the environment or a log line.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring
from types import TracebackType
from typing import Any

from zstream_mp.errors import InvalidContextError

logger = logging.getLogger("zstream_mp")

CONTEXT_ENV = "ZSTREAM_CONTEXT"
SERVER_ENV = "ZSTREAM_SERVER"
TOKEN_ENV = "ZSTREAM_TOKEN"


@dataclass(frozen=True)
class StreamContext:
    """Where events go: a run (and optionally its step) on a server.

    Frozen and picklable, so it can be handed to a worker explicitly
    (``pool.map(work, ..., initializer=zstream_mp.bind, initargs=(ctx,))``).
    """

    run_id: str
    step_run_id: str | None = None
    step_name: str | None = None
    server: str | None = None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_id", _uuid_str(self.run_id, "run_id"))
        if self.step_run_id is not None:
            object.__setattr__(self, "step_run_id", _uuid_str(self.step_run_id, "step_run_id"))
        if self.step_name is not None and not isinstance(self.step_name, str):
            kind = type(self.step_name).__name__  # type: ignore[unreachable]
            raise InvalidContextError(f"step_name must be a str, not {kind}")
        if self.server is not None:
            object.__setattr__(self, "server", _server_url(self.server))
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise InvalidContextError("token must be a non-empty str")


@dataclass(frozen=True)
class Destination:
    """A resolved context: the server to POST to and the event prefix, encoded once."""

    run_id: str
    server: str | None
    token: str | None
    prefix: bytes
    """``{"pipeline_run_id":…,"step_run_id":…,"step_name":…,"kind":`` as compact JSON."""


def _uuid_str(value: Any, name: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise InvalidContextError(f"{name} must be a UUID (str or uuid.UUID), got {value!r}")


def _server_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise InvalidContextError(f"server must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _json_str(value: str | None) -> str:
    return "null" if value is None else str(encode_basestring(value))


def _destination(ctx: StreamContext) -> Destination:
    server = ctx.server or _env_server()
    token = ctx.token or os.environ.get(TOKEN_ENV) or None
    prefix = (
        f'{{"pipeline_run_id":"{ctx.run_id}","step_run_id":{_json_str(ctx.step_run_id)},'
        f'"step_name":{_json_str(ctx.step_name)},"kind":'
    ).encode()
    return Destination(run_id=ctx.run_id, server=server, token=token, prefix=prefix)


def _env_server() -> str | None:
    raw = os.environ.get(SERVER_ENV)
    if not raw:
        return None
    try:
        return _server_url(raw)
    except InvalidContextError:
        return None


# --------------------------------------------------------------------------- binding

_lock = threading.Lock()
_bound: tuple[StreamContext, Destination] | None = None
_zenml_last: tuple[StreamContext, Destination] | None = None


class Binding:
    """What ``bind()`` returns: already in force, and a context manager that undoes it."""

    def __init__(self, context: StreamContext, previous: StreamContext | None,
                 previous_env: str | None) -> None:
        self.context = context
        self._previous = previous
        self._previous_env = previous_env

    def __enter__(self) -> StreamContext:
        return self.context

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._previous is not None:
            _set_bound(self._previous)
            return
        _set_bound(None)
        if self._previous_env is None:
            os.environ.pop(CONTEXT_ENV, None)
            _forget_origin()
        else:
            os.environ[CONTEXT_ENV] = self._previous_env


def bind(run_id: str | uuid.UUID | StreamContext, *, step_run_id: str | uuid.UUID | None = None,
         step_name: str | None = None, server: str | None = None,
         token: str | None = None) -> Binding:
    """Attribute this process's events (all threads) to a run, and hand it to children.

    Works as a plain call and as a context manager that restores what was bound before.
    """
    if isinstance(run_id, StreamContext):
        ctx = run_id
        overrides: dict[str, Any] = {
            k: v for k, v in (("step_run_id", step_run_id), ("step_name", step_name),
                              ("server", server), ("token", token)) if v is not None}
        if overrides:
            ctx = replace(ctx, **overrides)
    else:
        ctx = StreamContext(run_id=run_id, step_run_id=step_run_id,  # type: ignore[arg-type]
                            step_name=step_name, server=server, token=token)
    previous = _bound[0] if _bound else None
    previous_env = os.environ.get(CONTEXT_ENV)
    _set_bound(ctx)
    return Binding(ctx, previous, previous_env)


def _set_bound(ctx: StreamContext | None) -> None:
    global _bound, _inherited
    with _lock:
        _bound = (ctx, _destination(ctx)) if ctx is not None else None
        _inherited = None
    if ctx is not None:
        export(ctx)


def unbind() -> None:
    """Forget this process's binding and stop handing it to children started from now on."""
    _set_bound(None)
    os.environ.pop(CONTEXT_ENV, None)
    _forget_origin()


def current_context() -> StreamContext | None:
    """The context ``publish()`` would use right now in this thread."""
    found = _resolve()
    return found[0] if found is not None else None


def resolve_destination() -> Destination | None:
    """The destination of an event published now, or None outside any context."""
    bound = _bound
    if bound is not None:
        return bound[1]
    found = _resolve()
    return found[1] if found is not None else None


def _resolve() -> tuple[StreamContext, Destination] | None:
    global _zenml_last
    bound = _bound
    if bound is not None:
        return bound
    if "zenml" in sys.modules:
        from zstream_mp import _zenml

        ctx = _zenml.zenml_context()
        if ctx is not None:
            last = _zenml_last
            if last is not None and (last[0] is ctx or last[0] == ctx):
                return last
            resolved = (ctx, _destination(ctx))
            _zenml_last = resolved
            export(ctx)
            return resolved
    return _from_environment()


# --------------------------------------------------------------------------- handoff
#
# A child learns its context from ZSTREAM_CONTEXT, which names the process that bound it
# (``origin``). That process also keeps its current context in a 0600 file,
# ``ctx-<origin>.json``; a child re-reads it at most once a second, so workers that outlive
# a ``bind()`` in their parent (long-lived pools, the forkserver, loky) follow it.

RECHECK_SECONDS = 1.0


@dataclass
class _Inherited:
    raw: str
    origin_path: str | None
    stamp: int | None
    checked: float
    handed_down: tuple[StreamContext, Destination] | None
    """What the environment itself says; used when the origin's file is gone or unreadable."""
    resolved: tuple[StreamContext, Destination] | None


_inherited: _Inherited | None = None


def _state_dir() -> str:
    directory = os.path.join(tempfile.gettempdir(), f"zstream-mp-{os.getuid()}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return directory


def _origin_path(pid: int) -> str:
    return os.path.join(_state_dir(), f"ctx-{pid}.json")


def export(ctx: StreamContext) -> None:
    """Hand ``ctx`` to the children this process starts, and to those it already has."""
    data: dict[str, Any] = {"run_id": ctx.run_id}
    if ctx.step_run_id:
        data["step_run_id"] = ctx.step_run_id
    if ctx.step_name is not None:
        data["step_name"] = ctx.step_name
    if ctx.server:
        data["server"] = ctx.server
    try:
        if ctx.token:
            data["token_file"] = _token_file(ctx.token)
        pid = os.getpid()
        data["origin"] = pid
        value = json.dumps(data, separators=(",", ":"))
        if os.environ.get(CONTEXT_ENV) == value:
            return
        _write_private(_origin_path(pid), value)
        _remove_at_exit(_origin_path(pid))
    except OSError as exc:  # no writable temp dir: children still get the run, not the token
        logger.warning("zstream-mp cannot write its handoff files (%s); child processes "
                       "will need ZSTREAM_TOKEN or their own bind()", exc)
        data.pop("token_file", None)
        data.pop("origin", None)
        value = json.dumps(data, separators=(",", ":"))
    os.environ[CONTEXT_ENV] = value


def _forget_origin() -> None:
    with contextlib.suppress(OSError):
        os.unlink(_origin_path(os.getpid()))


def _from_environment() -> tuple[StreamContext, Destination] | None:
    global _inherited
    cached = _inherited
    now = time.monotonic()
    if cached is not None and now - cached.checked < RECHECK_SECONDS:
        return cached.resolved
    raw = os.environ.get(CONTEXT_ENV)
    if not raw:
        _inherited = None
        return None
    if cached is None or cached.raw != raw:
        handed_down = _parse_handoff(raw)
        cached = _Inherited(raw, _origin_of(raw), None, now, handed_down, handed_down)
    cached.checked = now
    if cached.origin_path is not None:
        try:
            stamp: int | None = os.stat(cached.origin_path).st_mtime_ns
        except OSError:  # the origin has exited or unbound: keep what was inherited
            stamp = None
        if stamp != cached.stamp:
            cached.stamp = stamp
            fresh = None
            if stamp is not None:
                with contextlib.suppress(OSError), open(cached.origin_path,
                                                         encoding="utf-8") as fh:
                    fresh = _parse_handoff(fh.read())
            cached.resolved = fresh or cached.handed_down
    _inherited = cached
    return cached.resolved


def _origin_of(raw: str) -> str | None:
    try:
        origin = json.loads(raw).get("origin")
    except (ValueError, AttributeError):
        return None
    if isinstance(origin, int) and origin != os.getpid():
        return _origin_path(origin)
    return None


def _parse_handoff(raw: str) -> tuple[StreamContext, Destination] | None:
    try:
        data = json.loads(raw)
        token = None
        token_file = data.get("token_file")
        if token_file:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip() or None
        ctx = StreamContext(run_id=data["run_id"], step_run_id=data.get("step_run_id"),
                            step_name=data.get("step_name"), server=data.get("server"),
                            token=token)
    except (ValueError, KeyError, TypeError, OSError, AttributeError):
        return None
    return ctx, _destination(ctx)


_token_files: dict[str, str] = {}


def _token_file(token: str) -> str:
    """A 0600 file holding ``token``, named by its hash so every binder agrees on it."""
    path = _token_files.get(token)
    if path is not None and os.path.exists(path):
        return path
    name = hashlib.sha256(token.encode()).hexdigest()[:24]
    path = os.path.join(_state_dir(), f"token-{name}")
    if not os.path.exists(path):
        _write_private(path, token)
        _remove_at_exit(path)  # only the creator removes it, at its own exit
    _token_files[token] = path
    return path


def _write_private(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


_cleanup: set[str] = set()


def _remove_at_exit(path: str) -> None:
    if path in _cleanup:
        return
    _cleanup.add(path)
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            with contextlib.suppress(OSError):
                os.unlink(path)

    atexit.register(remove)


def _after_fork_in_child() -> None:
    """The child follows its parent through the handoff, never through copied globals.

    Swapping references only: a new lock, and the parent's binding demoted to the
    inherited context the parent exported, which the child re-checks against the parent.
    """
    global _lock, _bound, _inherited, _zenml_last
    _lock = threading.Lock()
    _bound = None
    _inherited = None
    _zenml_last = None
    _cleanup.clear()
    _token_files.clear()
