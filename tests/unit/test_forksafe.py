"""`_forksafe`: the hooks run in ORDER, a failing hook is contained, the fork barrier."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

import pytest

from zstream_mp import _forksafe


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], None]]:
    """A private hook table, so the package's own hooks are neither run nor replaced."""
    table: dict[str, Callable[[], None]] = {}
    monkeypatch.setattr(_forksafe, "_child_hooks", table)
    monkeypatch.setattr(_forksafe, "failures", [])
    monkeypatch.setattr(_forksafe, "_barrier", threading.Lock())
    return table


def test_order_names_every_component_once() -> None:
    assert len(set(_forksafe.ORDER)) == len(_forksafe.ORDER)
    assert _forksafe.ORDER[:2] == ("handoff", "context")


def test_the_package_joins_with_its_components() -> None:
    import zstream_mp  # noqa: F401  (importing it registers the hooks)

    assert {"handoff", "context", "process"} <= set(_forksafe._child_hooks)


def test_unknown_component_is_refused(hooks: dict[str, Callable[[], None]]) -> None:
    with pytest.raises(ValueError, match="ORDER"):
        _forksafe.on_fork_in_child("mine", lambda: None)


def test_hooks_run_in_order_not_in_registration_order(
    hooks: dict[str, Callable[[], None]],
) -> None:
    ran: list[str] = []
    for component in reversed(_forksafe.ORDER):
        _forksafe.on_fork_in_child(component, lambda c=component: ran.append(c))  # type: ignore[misc]
    _forksafe._after_in_child()
    assert ran == list(_forksafe.ORDER)


def test_a_failing_hook_is_contained_and_recorded(hooks: dict[str, Callable[[], None]]) -> None:
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("hook failed")

    _forksafe.on_fork_in_child("handoff", boom)
    _forksafe.on_fork_in_child("process", lambda: ran.append("process"))
    _forksafe._after_in_child()
    assert ran == ["process"]
    assert [(c, str(e)) for c, e in _forksafe.failures] == [("handoff", "hook failed")]


def test_a_real_fork_runs_the_hooks_in_the_child_only(
    hooks: dict[str, Callable[[], None]],
) -> None:
    ran: list[str] = []
    _forksafe.on_fork_in_child("sigterm", lambda: ran.append("sigterm"))
    _forksafe.on_fork_in_child("context", lambda: ran.append("context"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, json.dumps(ran).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        in_child = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert in_child == ["context", "sigterm"]
    assert ran == []


def test_a_fork_waits_for_a_guarded_section(hooks: dict[str, Callable[[], None]]) -> None:
    inside = threading.Event()

    def section() -> None:
        with _forksafe.fork_barrier():
            inside.set()
            time.sleep(0.3)

    worker = threading.Thread(target=section)
    worker.start()
    inside.wait(5)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    waited = time.monotonic() - started
    os.waitpid(pid, 0)
    worker.join(5)
    assert waited >= 0.2
    with _forksafe.fork_barrier():  # released again in the parent
        pass


def test_the_barrier_wait_is_bounded(
    hooks: dict[str, Callable[[], None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_forksafe, "BARRIER_WAIT", 0.1)
    release = threading.Event()
    inside = threading.Event()

    def stuck() -> None:
        with _forksafe.fork_barrier():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=stuck)
    worker.start()
    inside.wait(5)
    started = time.monotonic()
    _forksafe._before()
    assert 0.08 <= time.monotonic() - started < 2.0
    assert _forksafe._barrier_held_for_fork is False
    _forksafe._after_in_parent()  # must not release a lock the fork never took
    release.set()
    worker.join(5)
    assert not _forksafe._barrier.locked()


def test_the_child_gets_a_fresh_barrier(hooks: dict[str, Callable[[], None]]) -> None:
    _forksafe._before()
    assert _forksafe._barrier.locked()
    held = _forksafe._barrier
    _forksafe._after_in_child()
    assert _forksafe._barrier is not held and not _forksafe._barrier.locked()
    held.release()


def test_a_child_forked_while_the_import_hook_is_busy_can_still_use_it() -> None:
    """A real fork while another thread holds the post-import hook's lock: the child asks
    for a hook (which takes that lock) and exits instead of waiting forever."""
    from zstream_mp import _import_hook

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _import_hook._lock:
            holding.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    holding.wait(5)
    try:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _import_hook.when_imported("zsz_never_imported_module", lambda m: None)
            except BaseException:
                code = 1
            os._exit(code)
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not done:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert done and os.waitstatus_to_exitcode(status) == 0, "the child hung on the lock"
    finally:
        release.set()
        worker.join(5)
        _import_hook._waiting.pop("zsz_never_imported_module", None)
