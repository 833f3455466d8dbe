"""Which run and step is active: read from ZenML's own context variables, never imported.

A step or a dynamic pipeline can only be active if its module is already loaded, so the
lookup imports nothing. Identity is re-read on every call, because the local orchestrator
runs several steps one after another in one process; while the context object and the
credentials are unchanged the previous answer is returned as is.

Server precedence: `ZSTREAM_SERVER` (with `ZSTREAM_TOKEN`) overrides the store URL; both
are read when the step or the credentials change, not on every publish.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from zstream_mp._stream_context import Destination, StreamContext
from zstream_mp._wire import ENV_SERVER, ENV_TOKEN
from zstream_mp._zenml import credentials
from zstream_mp._zenml.credentials import Credentials, norm

__all__ = [
    "CONTEXT_CLASSES",
    "DYNAMIC_MODULE",
    "STEP_MODULE",
    "Answer",
    "StepShortcut",
    "active_owner",
    "forget",
    "last",
    "server_and_token",
    "shortcut",
    "zenml_context",
]

_log = logging.getLogger("zstream_mp._zenml")

STEP_MODULE = "zenml.steps.step_context"
DYNAMIC_MODULE = "zenml.execution.pipeline.dynamic.run_context"
CONTEXT_CLASSES = {STEP_MODULE: "StepContext", DYNAMIC_MODULE: "DynamicPipelineRunContext"}
"""ZenML's context classes by module: a step's, and a dynamic pipeline run's."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer of `zenml_context()`, kept whole so that threads in different steps never
    pair one step's context object with another's identity."""

    owner: object
    credentials: Credentials
    context: StreamContext


@dataclass(frozen=True, slots=True)
class StepShortcut:
    """What keeps a step's answer right, for a caller that caches what it derived from it.

    The answer stands while `var.get(None) is owner`, `identity.last is answer` (a new
    step, a fork or a re-login replaces it) and `time.monotonic() < until` (the
    credentials' recheck); `destination` is what the caller derived.
    """

    var: ContextVar[Any]
    owner: object
    answer: Answer
    until: float
    destination: Destination


last: Answer | None = None
"""The latest answer in this process (None after a fork, a step's start or a re-login)."""

# The ContextVar objects, found once their modules are loaded (class attributes: stable).
_step_var: Any = None
_dynamic_var: Any = None


def forget() -> None:
    """Drop the latest answer: the next lookup resolves the step again."""
    global last
    last = None


def _context_var(module_name: str) -> Any:
    """The ContextVar behind a ZenML `BaseContext` class, if its module is loaded."""
    module = sys.modules.get(module_name)
    if module is None:
        return None
    cls = getattr(module, CONTEXT_CLASSES[module_name], None)
    return getattr(cls, "__context_var__", None)


def active_owner() -> object | None:
    """The active StepContext, else the active DynamicPipelineRunContext, else None."""
    global _step_var, _dynamic_var
    var = _step_var
    if var is None:
        var = _step_var = _context_var(STEP_MODULE)
    owner = var.get(None) if var is not None else None
    if owner is None:
        var = _dynamic_var
        if var is None:
            var = _dynamic_var = _context_var(DYNAMIC_MODULE)
        owner = var.get(None) if var is not None else None
    return owner


def _identity(owner: Any) -> tuple[str, str | None, str | None]:
    """(run id, step run id, step name) of a step or dynamic-run context object."""
    if hasattr(owner, "step_run"):
        return str(owner.pipeline_run.id), str(owner.step_run.id), str(owner.step_name)
    return str(owner.run.id), None, None


def zenml_context() -> StreamContext | None:
    """The active ZenML step (or dynamic pipeline run) as a StreamContext, else None.

    Never raises: any failure is logged at debug level and yields None.
    """
    try:
        owner = active_owner()
        if owner is None:
            return None
        answer = last
        # Same context object, same credentials object, still fresh: no syscall (getpid)
        # and no os.environ read (the at-fork hook drops `last`).
        if (
            answer is not None
            and answer.owner is owner
            and answer.credentials is credentials.current
            and time.monotonic() - answer.credentials.checked_at < credentials.TTL
        ):
            return answer.context
        return _build_context(owner)
    except Exception as exc:
        _log.debug("ZenML context unavailable: %s", exc, exc_info=True)
        return None


def shortcut(destination: Destination) -> StepShortcut | None:
    """The conditions under which `zenml_context()`'s latest answer (and `destination`,
    derived from it) stays right. None unless that answer is the active step's (a dynamic
    run's is not cached)."""
    var, answer = _step_var, last
    if var is None or answer is None or var.get(None) is not answer.owner:
        return None
    until = answer.credentials.checked_at + credentials.TTL
    return StepShortcut(var, answer.owner, answer, until, destination)


def server_and_token(
    creds: Credentials, env_server: str | None, env_token: str | None
) -> tuple[str | None, str | None]:
    """Apply `ZSTREAM_SERVER` / `ZSTREAM_TOKEN` over ZenML's store."""
    server = norm(env_server) or creds.server
    if env_token:
        return server, env_token
    if server is not None and server == creds.server:
        return server, creds.token
    return server, None


def _build_context(owner: object) -> StreamContext:
    """Resolve ids, credentials and the environment's overrides for a new context object."""
    global last
    creds = credentials.load()
    run_id, step_run_id, step_name = _identity(owner)
    server, token = server_and_token(
        creds, os.environ.get(ENV_SERVER) or None, os.environ.get(ENV_TOKEN) or None
    )
    context = StreamContext(
        run_id=run_id, step_run_id=step_run_id, step_name=step_name, server=server, token=token
    )
    last = Answer(owner, creds, context)
    return context
