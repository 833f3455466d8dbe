"""`_zenml.step_watch`: a watched step exports its context on enter, and on exit calls the
step-end hook and restores what was exported before. A stand-in `StepContext` class in a
module under ZenML's name replaces ZenML's (not installed here)."""

from __future__ import annotations

import sys
import types
import uuid
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import Any

import pytest

from zstream_mp import _handoff
from zstream_mp._stream_context import StreamContext
from zstream_mp._zenml import identity, step_watch

RUN = str(uuid.uuid4())


class StepContext:
    __context_var__: ContextVar[Any] = ContextVar("watched_step")

    def __init__(self) -> None:
        self.entered = self.exited = 0
        self._token: Token[Any] | None = None

    def __enter__(self) -> StepContext:
        self.entered += 1
        self._token = self.__context_var__.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.exited += 1
        if self._token is not None:
            self.__context_var__.reset(self._token)


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    mod = types.ModuleType(identity.STEP_MODULE)
    mod.StepContext = StepContext  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, identity.STEP_MODULE, mod)
    monkeypatch.setattr(identity, "_step_var", None)
    monkeypatch.setattr(identity, "last", None)
    yield mod


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What the handoff was asked to export and restore, in order."""
    seen: list[str | None] = []
    monkeypatch.setattr(_handoff, "exported", lambda: "before")
    monkeypatch.setattr(_handoff, "export", lambda ctx: seen.append(f"export {ctx.run_id}"))
    monkeypatch.setattr(_handoff, "restore", lambda prev: seen.append(f"restore {prev}"))
    monkeypatch.setattr(
        identity, "zenml_context", lambda: StreamContext(RUN, None, None, "http://s:1")
    )
    return seen


def test_a_watched_step_exports_on_enter_and_ends_on_exit(
    module: types.ModuleType, exports: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[bool] = []
    monkeypatch.setattr(step_watch, "_on_step_end", lambda: ended.append(True))
    step_watch._instrument(module)
    step = StepContext()
    with step:
        assert exports == [f"export {RUN}"]
        assert ended == []
    assert ended == [True]
    assert exports == [f"export {RUN}", "restore before"]
    assert (step.entered, step.exited) == (1, 1)  # ZenML's own methods still run


def test_instrumenting_twice_wraps_once(module: types.ModuleType) -> None:
    step_watch._instrument(module)
    wrapped = StepContext.__enter__
    step_watch._instrument(module)
    assert StepContext.__enter__ is wrapped


def test_a_failing_end_hook_is_never_in_zenmls_way(
    module: types.ModuleType, exports: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> None:
        raise RuntimeError("delivery failed")

    monkeypatch.setattr(step_watch, "_on_step_end", boom)
    step_watch._instrument(module)
    step = StepContext()
    with step:
        pass
    assert step.exited == 1 and exports[-1] == "restore before"


def test_export_active_without_zenml_does_nothing(
    exports: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "zenml", raising=False)
    step_watch.export_active()
    assert exports == []
