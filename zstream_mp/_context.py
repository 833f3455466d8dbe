"""Which run, step and server an event belongs to: binding and the resolution order.

Resolution order, per `publish()`: an explicit `bind()` in this process, then ZenML's
step context, then ZenML's dynamic-pipeline context (both only when `zenml` is already
imported), then the context a parent process handed down (`_handoff`).

`ZSTREAM_SERVER` fills in a server the context lacks, and `ZSTREAM_TOKEN` is the token
for that server only: a token is never sent to a server it was not given for.

Each context is resolved once into a `Destination` (server, token, the event's encoded
prefix); the caches here hand the same object back while the context is unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import replace
from json.encoder import encode_basestring
from types import TracebackType
from typing import Any

from zstream_mp import _handoff, _process, _zenml
from zstream_mp._forksafe import on_fork_in_child
from zstream_mp._settings import env_server, env_token
from zstream_mp._stream_context import Destination, StreamContext
from zstream_mp._wire import ENV_DURABLE
from zstream_mp._zenml import StepShortcut
from zstream_mp._zenml import identity as _zenml_identity

_lock = threading.Lock()
_bound: tuple[StreamContext, Destination] | None = None
_local_bound: contextvars.ContextVar[tuple[StreamContext, Destination] | None] = (
    contextvars.ContextVar("zstream_mp_binding", default=None)
)
"""The run of `with bind(...)` in this context (a task, a thread), before `_bound`."""
_local_get = _local_bound.get
_open_ever = False
"""A `with bind(...)` block was opened in this process (`publish()` then looks for one)."""
_open: list[Binding] = []
"""`with bind(...)` blocks open now, oldest first."""
_base: tuple[StreamContext | None, str | None] = (None, None)
"""What was bound, and handed down, before the oldest open block."""
_zenml_last: tuple[StreamContext, Destination] | None = None
_zenml_hot: StepShortcut | None = None
"""The active step's destination and what keeps it right: a step's publishes skip the
lookup while it holds."""
_monotonic = time.monotonic
_inherited_last: tuple[StreamContext, Destination] | None = None


def _json_str(value: str | None) -> str:
    return "null" if value is None else str(encode_basestring(value))


def destination(ctx: StreamContext) -> Destination:
    """Where `ctx`'s events go, with `ZSTREAM_SERVER`/`ZSTREAM_TOKEN` applied."""
    from_env = env_server()
    server = ctx.server or from_env
    token = ctx.token
    if token is None and server is not None and server == from_env:
        token = env_token()
    prefix = (
        f'{{"pipeline_run_id":"{ctx.run_id}","step_run_id":{_json_str(ctx.step_run_id)},'
        f'"step_name":{_json_str(ctx.step_name)},"kind":'
    ).encode()
    return Destination(run_id=ctx.run_id, server=server, token=token, prefix=prefix)


# --------------------------------------------------------------------------- binding


class Binding:
    """What `bind()` returns: already in force, and a context manager that undoes it.

    As a context manager it also binds the run to the current context (`contextvars`):
    an asyncio task, or a thread, and the tasks it starts. Two tasks each in their own
    `with bind(...)` publish to their own runs; processes started inside the block get
    the process-wide binding, the most recent one.
    """

    def __init__(
        self, context: StreamContext, previous: StreamContext | None, previous_export: str | None
    ) -> None:
        self.context = context
        self._previous = previous
        self._previous_export = previous_export
        self._local: contextvars.Token[tuple[StreamContext, Destination] | None] | None = None

    def __repr__(self) -> str:
        return f"Binding({self.context!r})"

    def __enter__(self) -> StreamContext:
        self._local = _local_bound.set((self.context, destination(self.context)))
        global _base, _open_ever
        _open_ever = True
        with _lock:
            if not _open:
                _base = (self._previous, self._previous_export)
            _open.append(self)
        return self.context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._local is not None:
            with contextlib.suppress(ValueError):  # left in another context than entered
                _local_bound.reset(self._local)
            self._local = None
        # Blocks of several tasks may close in any order: the process-wide binding becomes
        # the newest block still open, or, when none is, what was bound before the first.
        with _lock:
            if self in _open:
                _open.remove(self)
            newest = _open[-1].context if _open else None
            previous, previous_export = _base if not _open else (None, None)
        if newest is not None:
            _set_bound(newest)
        elif previous is not None:
            _set_bound(previous)
        else:
            _set_bound(None)
            _handoff.restore(previous_export)


def bind(
    run_id: str | uuid.UUID | StreamContext,
    *,
    step_run_id: str | uuid.UUID | None = None,
    step_name: str | None = None,
    server: str | None = None,
    token: str | None = None,
    durable: bool = False,
) -> Binding:
    """Attribute this process's events (all threads) to a run, and hand it to children.

    `durable=True` turns on durable mode (every event spooled in `publish()`) for this
    process from its first publish, and for the children it starts (`ZSTREAM_DURABLE`).

    Works as a plain call and as a context manager that restores what was bound before.
    """
    if isinstance(run_id, StreamContext):
        ctx = run_id
        overrides: dict[str, Any] = {
            k: v
            for k, v in (
                ("step_run_id", step_run_id),
                ("step_name", step_name),
                ("server", server),
                ("token", token),
            )
            if v is not None
        }
        if overrides:
            ctx = replace(ctx, **overrides)
    else:
        ctx = StreamContext(
            run_id=run_id,  # type: ignore[arg-type]  # validated (UUID or str) by the value
            step_run_id=step_run_id,  # type: ignore[arg-type]
            step_name=step_name,
            server=server,
            token=token,
        )
    if durable:
        _durable_from_now()
    previous = _bound[0] if _bound else None
    previous_export = _handoff.exported()
    _set_bound(ctx)
    _after_binding()
    return Binding(ctx, previous, previous_export)


def _durable_from_now() -> None:
    os.environ[ENV_DURABLE] = "1"
    st = _process.existing_state()
    if st is not None and not st.queue.durable:
        logging.getLogger("zstream_mp").warning(
            "bind(durable=True) after this process's first publish: its children are "
            "durable, this process is not (set %s=1 before it publishes)",
            ENV_DURABLE,
        )


def _set_bound(ctx: StreamContext | None) -> None:
    global _bound
    resolved = (ctx, destination(ctx)) if ctx is not None else None
    with _lock:
        _bound = resolved
    _handoff.forget_inherited()
    if ctx is not None:
        _handoff.export(ctx)


def _after_binding() -> None:
    _process.on_bind()


def unbind() -> None:
    """Forget this process's binding and stop handing it to children started from now on."""
    _set_bound(None)
    _handoff.withdraw()


# --------------------------------------------------------------------------- resolution


def current_context() -> StreamContext | None:
    """The context `publish()` would use right now in this thread."""
    found = _resolve()
    return found[0] if found is not None else None


def resolve_destination() -> Destination | None:
    """The destination of an event published now, or None outside any context."""
    if _open_ever:  # a task's binding first; no ContextVar lookup until a block is opened
        local = _local_get()
        if local is not None:
            return local[1]
    bound = _bound
    if bound is not None:
        return bound[1]
    hot = _zenml_hot  # inside a ZenML step: no call but ContextVar.get and the clock
    if (
        hot is not None
        and hot.var.get(None) is hot.owner
        and _zenml_identity.last is hot.answer
        and _monotonic() < hot.until
    ):
        return hot.destination
    found = _resolve()
    return found[1] if found is not None else None


def _resolve() -> tuple[StreamContext, Destination] | None:
    global _zenml_last, _zenml_hot, _inherited_last
    local = _local_get()
    if local is not None:
        return local
    bound = _bound
    if bound is not None:
        return bound
    if "zenml" in sys.modules:
        ctx = _zenml.zenml_context()
        if ctx is not None:
            last = _zenml_last
            if last is None or not (last[0] is ctx or last[0] == ctx):
                last = _zenml_last = (ctx, destination(ctx))
                _handoff.export(ctx)
            _zenml_hot = _zenml.shortcut(last[1])
            return last
    inherited = _handoff.inherited()
    if inherited is None:
        return None
    last = _inherited_last
    if last is not None and last[0] is inherited:
        return last
    resolved = (inherited, destination(inherited))
    _inherited_last = resolved
    return resolved


def _after_fork_in_child() -> None:
    """The child follows its parent through the handoff, never through copied globals.

    Swapping references only: a new lock, and the parent's binding demoted to the
    context the parent exported, which the child re-checks against the parent.
    """
    global _lock, _bound, _zenml_last, _zenml_hot, _inherited_last
    _lock = threading.Lock()
    _bound = None
    _local_bound.set(None)  # a task's binding stays in the parent, like the process-wide one
    _zenml_last = None
    _zenml_hot = None
    _inherited_last = None


on_fork_in_child("context", _after_fork_in_child)
