"""`_zenml.identity`: the active step read from ZenML's context variable, the answer reused
while it holds, and the `StepShortcut` that lets `publish()` skip the lookup.

ZenML is not imported: a module under ZenML's name with a `StepContext` class carrying a
`__context_var__` stands in for it, as ZenML's `BaseContext` does.
"""

from __future__ import annotations

import sys
import time
import types
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import pytest

from zstream_mp._stream_context import Destination
from zstream_mp._wire import ENV_SERVER, ENV_TOKEN
from zstream_mp._zenml import credentials, identity
from zstream_mp._zenml.credentials import Credentials

RUN, STEP_RUN = str(uuid.uuid4()), str(uuid.uuid4())
STORE = "http://zenml.example:8080"


class _Ids:
    def __init__(self, value: str) -> None:
        self.id = value


class StepContext:
    """Shaped like ZenML's: the step's run, its step run and its name."""

    __context_var__: ContextVar[Any] = ContextVar("step_context")

    def __init__(self) -> None:
        self.pipeline_run, self.step_run, self.step_name = _Ids(RUN), _Ids(STEP_RUN), "train"


class DynamicPipelineRunContext:
    __context_var__: ContextVar[Any] = ContextVar("dynamic_context")

    def __init__(self) -> None:
        self.run = _Ids(RUN)


@pytest.fixture(autouse=True)
def zenml_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, cls in (
        (identity.STEP_MODULE, StepContext),
        (identity.DYNAMIC_MODULE, DynamicPipelineRunContext),
    ):
        module = types.ModuleType(name)
        setattr(module, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(identity, "_step_var", None)
    monkeypatch.setattr(identity, "_dynamic_var", None)
    monkeypatch.setattr(identity, "last", None)
    monkeypatch.setattr(credentials, "current", Credentials(STORE, "store-token", time.monotonic()))
    monkeypatch.delenv(ENV_SERVER, raising=False)
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    yield


def _dest() -> Destination:
    return Destination(run_id=RUN, server=STORE, token="store-token", prefix=b"")


def test_no_active_step_is_no_context() -> None:
    assert identity.zenml_context() is None
    assert identity.shortcut(_dest()) is None


def test_a_steps_identity_and_the_stores_credentials() -> None:
    token = StepContext.__context_var__.set(StepContext())
    try:
        ctx = identity.zenml_context()
        assert ctx is not None
        assert (ctx.run_id, ctx.step_run_id, ctx.step_name) == (RUN, STEP_RUN, "train")
        assert (ctx.server, ctx.token) == (STORE, "store-token")
        assert identity.zenml_context() is ctx  # the answer is reused while it holds
    finally:
        StepContext.__context_var__.reset(token)


def test_the_shortcut_holds_until_the_answer_is_replaced() -> None:
    owner = StepContext()
    token = StepContext.__context_var__.set(owner)
    try:
        identity.zenml_context()
        dest = _dest()
        cut = identity.shortcut(dest)
        assert cut is not None
        assert cut.var.get(None) is cut.owner is owner
        assert cut.answer is identity.last and cut.destination is dest
        assert cut.until == pytest.approx(cut.answer.credentials.checked_at + credentials.TTL)
        identity.forget()
        assert cut.answer is not identity.last
    finally:
        StepContext.__context_var__.reset(token)


def test_new_credentials_give_a_new_answer() -> None:
    token = StepContext.__context_var__.set(StepContext())
    try:
        first = identity.zenml_context()
        credentials.current = Credentials(STORE, "newer-token", time.monotonic())
        second = identity.zenml_context()
        assert second is not None and second is not first and second.token == "newer-token"
    finally:
        StepContext.__context_var__.reset(token)


def test_a_dynamic_run_has_no_step_and_no_shortcut() -> None:
    token = DynamicPipelineRunContext.__context_var__.set(DynamicPipelineRunContext())
    try:
        ctx = identity.zenml_context()
        assert ctx is not None and (ctx.run_id, ctx.step_run_id, ctx.step_name) == (RUN, None, None)
        assert identity.shortcut(_dest()) is None
    finally:
        DynamicPipelineRunContext.__context_var__.reset(token)


def test_a_failing_lookup_is_no_context(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        @property
        def pipeline_run(self) -> Any:
            raise RuntimeError("half-built step")

        step_run = None

    token = StepContext.__context_var__.set(Broken())
    try:
        assert identity.zenml_context() is None
    finally:
        StepContext.__context_var__.reset(token)


def test_the_environment_overrides_the_store() -> None:
    creds = Credentials(STORE, "store-token", 0.0)
    assert identity.server_and_token(creds, None, None) == (STORE, "store-token")
    assert identity.server_and_token(creds, STORE + "/", None) == (STORE, "store-token")
    # ZenML's token never goes to another server.
    assert identity.server_and_token(creds, "http://ours:1", None) == ("http://ours:1", None)
    assert identity.server_and_token(creds, "http://ours:1", "t") == ("http://ours:1", "t")
    local = Credentials(None, None, 0.0)
    assert identity.server_and_token(local, None, None) == (None, None)
