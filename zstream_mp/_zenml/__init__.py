"""Run, step and server identity taken from ZenML itself, and handed to a step's children.

The only wing that touches ZenML, and it never imports ZenML itself: a plain process never
pays for (or triggers) a ZenML import. One job per module:

- `identity`: which run and step is active, from ZenML's context variables, and the
  `StepShortcut` record that lets `publish()` skip the lookup while a step's answer holds;
- `credentials`: the REST store's URL and token, cached per process, and the re-login
  after a 401;
- `step_watch`: wrapping `StepContext.__enter__`/`__exit__` so that a step's context reaches
  its children from its start, and the hook for the step's end;
- `signals`: a forked child gets back the signal handlers ZenML's step replaced.

At a fork the child drops the parent's credentials and answer and releases the step's
signal handlers; before a fork the forking thread's step is exported.
"""

from __future__ import annotations

from zstream_mp._forksafe import before_fork, on_fork_in_child
from zstream_mp._zenml import credentials, identity
from zstream_mp._zenml.identity import StepShortcut, shortcut, zenml_context
from zstream_mp._zenml.signals import release_step_signals
from zstream_mp._zenml.step_watch import export_active, watch

__all__ = ["StepShortcut", "identity", "refresh_token", "shortcut", "watch", "zenml_context"]


def refresh_token(server: str) -> str | None:
    """A fresh bearer token for `server` from ZenML's store after a 401, else None; the
    step's latest answer, which carried the old token, is dropped. Never raises."""
    token = credentials.refresh_token(server)
    if token is not None:
        identity.forget()
    return token


def _after_fork_in_child() -> None:
    credentials.reset()
    identity.forget()
    release_step_signals()


on_fork_in_child("zenml", _after_fork_in_child)
before_fork("zenml", export_active)
