"""Tree-wide flush and stats: this process and its descendants, or every publisher of a run.

A process's descendants are the registry entries whose recorded ancestors include this
process's identity (pid and start time): recorded when each one registered, so a grandchild
is still found after its parent died. With `run_id` the scope is every entry on this
host that published to that run (Ray and Dask workers are not our descendants).

The parent only observes: each live process drains on its own (its sender runs while it
has events, and its exit hooks flush or spill). The parent adopts the spools that dead
processes left and waits until every process in scope has settled everything it published.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from zstream_mp._recovery import adopt as _adopt
from zstream_mp._recovery import liveness as _liveness
from zstream_mp._recovery import registry as _registry
from zstream_mp._stats import ProcessRow, TreeStats

POLL_MIN = 0.005
POLL_MAX = 0.1


def in_scope(
    found: _registry.Found, root: tuple[int, int | None] | None, run_id: str | None
) -> bool:
    if run_id is not None:
        return run_id in (found.identity.get("runs") or ())
    assert root is not None
    if found.pid == root[0] and (root[1] is None or found.start == root[1]):
        return True
    return found.descends_from(*root)


def rows(root: tuple[int, int | None] | None, run_id: str | None) -> list[ProcessRow]:
    return [f.row() for f in _registry.scan() if in_scope(f, root, run_id)]


def tree_stats(
    scope: str, run_id: str | None, root: tuple[int, int | None] | None = None
) -> TreeStats:
    if scope == "tree":
        root = root or _liveness.own_identity()
        return TreeStats("tree", root[0], None, tuple(rows(root, None)))
    if run_id is None:
        raise ValueError("stats(scope='run') needs run_id")
    return TreeStats("run", None, run_id, tuple(rows(None, run_id)))


def _spool_in_scope(root: tuple[int, int | None] | None, run_id: str | None) -> set[str]:
    return {f.name for f in _registry.scan() if in_scope(f, root, run_id)}


class OwnProcess(Protocol):
    """What a tree flush needs of the calling process's publisher (`_process`)."""

    def flush_until(self, deadline: float) -> bool: ...

    def _count_adopted(self, result: _adopt.Adopted) -> None: ...


TokenFor = Callable[[str], "str | None"]


def adopt_descendants(
    deadline: float,
    run_id: str | None = None,
    *,
    token_for: TokenFor,
    on_result: Callable[[_adopt.Adopted], None] | None,
) -> bool:
    """Adopt the spools that dead processes in scope left; True when none is left."""
    root = None if run_id is not None else _liveness.own_identity()
    names = _spool_in_scope(root, run_id)
    me = _liveness.own_identity()
    return _adopt.adopt_all(
        deadline,
        only=lambda s: s.entry_name in names and s.owner_pid != me[0],
        token_for=token_for,
        on_result=on_result,
    )


def flush_tree(
    deadline: float, run_id: str | None, *, own: OwnProcess | None, token_for: TokenFor
) -> bool:
    """Wait until everything published in scope is on the server (or settled by policy)."""
    st = own
    on_result = st._count_adopted if st is not None else None
    own_ok = True
    if st is not None:
        own_ok = st.flush_until(deadline)
    root = None if run_id is not None else _liveness.own_identity()
    me = _liveness.own_identity()
    delay = POLL_MIN
    while True:
        pending = False
        lost = False
        adopt = False
        for found in _registry.scan():
            if not in_scope(found, root, run_id) or (found.pid, found.start) == me:
                continue
            row = found.row()
            if row.state == "alive":
                if row.stats.queued or row.spool_pending:
                    pending = True
                continue
            if row.spool_pending:
                if found.spool is not None:
                    adopt = True
                    pending = True
                else:
                    lost = True
            elif row.stats.queued:
                lost = True  # killed without a spool: nothing left to wait for
        adopted = adopt and adopt_descendants(
            deadline, run_id, token_for=token_for, on_result=on_result
        )
        if adopted and time.monotonic() < deadline:
            continue  # adopted everything there was: look again at once
        if not pending:
            return own_ok and not lost
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(POLL_MAX, delay * 2)
