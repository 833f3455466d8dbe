"""The one `os.register_at_fork` hook of the package, and the order its parts run in.

Modules join the dispatcher instead of registering hooks of their own, so the order in
which the child resets its state is written down here rather than left to import order
(before a fork, in the parent, the same order: only `zenml` has a hook there, exporting
the forking thread's step so the child inherits it):

1. `handoff`  forgets the parent's handoff files (they are the parent's to remove);
2. `context`  drops the parent's binding and caches;
3. `zenml`    drops the parent's cached ZenML credentials;
4. `process`  drops the parent's queue, sender thread and HTTP clients;
5. `sigterm`  forgets the parent's SIGTERM watcher and its pipe;
6. `registry` forgets the parent's registry entry (the child makes its own on its first
   publish);
7. `import_hook` gets a lock of its own for the post-import hook's table (a thread of the
   parent may have held the parent's at the fork).

Every child hook only swaps references: no logging, no I/O, no `close()`, no `join()`,
no lock that another thread could hold. A failing hook is contained (the fork must not
fail for it) and recorded in `failures` for tests and debugging.

`fork_barrier()` guards the few sections a fork must never land in: building an HTTP
client initialises OpenSSL, whose locks a child would inherit held (a child forked in that
window blocks forever on its own first TLS context). The hook taken before a fork waits for
such a section to end, bounded by `BARRIER_WAIT` so that a fork is never held up for long.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

ORDER = ("handoff", "context", "zenml", "process", "sigterm", "registry", "import_hook")
"""The components, in the order their child hooks run."""
BARRIER_WAIT = 2.0
"""Seconds a fork waits for a guarded section to end before going ahead anyway."""

_child_hooks: dict[str, Callable[[], None]] = {}
_before_hooks: dict[str, Callable[[], None]] = {}
failures: list[tuple[str, BaseException]] = []
"""Child hooks that raised, as (component, exception), in this process."""

_barrier = threading.Lock()
_barrier_held_for_fork = False


def before_fork(component: str, hook: Callable[[], None]) -> None:
    """Run `hook` in the parent right before every fork, in `ORDER`. It may do I/O but
    must be quick and must not fork or wait on another thread."""
    if component not in ORDER:
        raise ValueError(f"unknown fork-hook component {component!r}; add it to ORDER")
    _before_hooks[component] = hook


def on_fork_in_child(component: str, hook: Callable[[], None]) -> None:
    """Run `hook` in every forked child, in `ORDER`. One hook per component."""
    if component not in ORDER:
        raise ValueError(f"unknown fork-hook component {component!r}; add it to ORDER")
    _child_hooks[component] = hook


@contextlib.contextmanager
def fork_barrier() -> Iterator[None]:
    """A section no fork may land in. Keep it short: every fork in the process waits for it."""
    with _barrier:
        yield


def _before() -> None:
    global _barrier_held_for_fork
    for component in ORDER:
        hook = _before_hooks.get(component)
        if hook is not None:
            try:
                hook()
            except Exception as exc:  # the fork must succeed whatever a hook does
                failures.append((component, exc))
    _barrier_held_for_fork = _barrier.acquire(timeout=BARRIER_WAIT)


def _after_in_parent() -> None:
    global _barrier_held_for_fork
    if _barrier_held_for_fork:
        _barrier_held_for_fork = False
        _barrier.release()


def _after_in_child() -> None:
    global _barrier, _barrier_held_for_fork
    _barrier = threading.Lock()  # never the parent's: another thread may have held it
    _barrier_held_for_fork = False
    failures.clear()
    for component in ORDER:
        hook = _child_hooks.get(component)
        if hook is None:
            continue
        try:
            hook()
        except BaseException as exc:  # the fork must succeed whatever a hook does
            failures.append((component, exc))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
    )
