"""Watching ZenML steps: a step's context reaches its children from the moment it starts.

ZenML offers no hook for "a step starts" that a library can join (step hooks are the user's
configuration), so `watch()` asks to be told when ZenML's context modules are imported and
wraps `StepContext.__enter__`/`__exit__` (and the dynamic-pipeline context's): the least
invasive point in ZenML's source (`zenml/orchestrators/step_runner.py` enters
`with step_context:` right before the user's function runs). On enter the step's context is
exported through `_handoff` (the environment variable spawn, forkserver, loky and Dask
workers copy, and which threads without a copied `contextvars` context fall back to); on
exit the previous export is restored. The wrappers call ZenML's own methods first and never
raise.

When a step ends, the `on_step_end` hook given to `watch()` delivers what the step and the
children it started left behind, before ZenML marks the run finished and ends its stream.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from zstream_mp import _handoff, _import_hook
from zstream_mp._zenml import credentials, identity

__all__ = ["export_active", "watch"]

_log = logging.getLogger("zstream_mp._zenml")

_MISSING = object()
_previous_exports: dict[int, str | None] = {}
"""What was exported before a step (by id of its context object) entered."""
_on_step_end: Callable[[], None] | None = None


def watch(on_step_end: Callable[[], None]) -> None:
    """Export each ZenML step's context from its start, and call `on_step_end` (from the
    step's own thread, bounded) when a step ends."""
    global _on_step_end
    _on_step_end = on_step_end
    for module_name in identity.CONTEXT_CLASSES:
        _import_hook.when_imported(module_name, _instrument)


def _instrument(module: Any) -> None:
    cls = getattr(module, identity.CONTEXT_CLASSES.get(module.__name__, ""), None)
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
    if identity.active_owner() is not None:  # imported from inside a running step
        export_active()


def _entered(owner: object) -> None:
    try:
        context = identity.zenml_context()
        if context is None:
            return
        _previous_exports[id(owner)] = _handoff.exported()
        _handoff.export(context)
        # The step's own publishes read ZenML's credentials afresh, as they would had the
        # step not been watched (the user's code may change them before it publishes).
        credentials.forget()
        identity.forget()
    except Exception as exc:  # never in ZenML's way
        _log.debug("could not export the step's context: %s", exc, exc_info=True)


def _exited(owner: object) -> None:
    previous = _previous_exports.pop(id(owner), _MISSING)
    if previous is _MISSING:
        return
    if _on_step_end is not None and "StepContext" in type(owner).__name__:
        try:
            _on_step_end()
        except Exception as exc:
            _log.debug("could not deliver what the step left: %s", exc, exc_info=True)
    try:
        _handoff.restore(previous)  # type: ignore[arg-type]
    except Exception as exc:
        _log.debug("could not restore the handoff after a step: %s", exc, exc_info=True)


def export_active() -> None:
    """Export the calling thread's active step, if any (cheap when already exported); also
    run before every fork, so a step running in a thread reaches the child it forks."""
    if "zenml" not in sys.modules:
        return
    try:
        context = identity.zenml_context()
        if context is not None:
            _handoff.export(context)
    except Exception as exc:
        _log.debug("could not export the step's context: %s", exc, exc_info=True)
